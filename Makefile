# redis-fence: `make run` starts Redis with the module, `make test` runs every check.
SHELL := /bin/bash
CARGO ?= cargo
REDIS_SERVER ?= redis-server

.PHONY: all deps build release run test unit integration lint clean

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
	$(CARGO) clippy --all-targets -- -D warnings

unit: deps
	$(CARGO) test --lib

# Integration tests load target/debug/libredis_fence.so into real redis-server processes.
integration: build
	$(CARGO) test --test '*'

test: lint unit integration

clean:
	$(CARGO) clean
	rm -rf .redis-data
