#!/usr/bin/env bash
# make soak-tests: the whole integration suite (tests/*.rs and the client crate's tests), run
# SOAK_RUNS times per server (Debian's redis-server 7.0, Redis 8.2 from .redis8/, Valkey 9.1
# from .valkey9/) while every core is kept busy by a competing load, to show that no test
# depends on luck or on the machine's speed. The competing load is SOAK_LOAD `yes > /dev/null`
# processes (default: one per core), started here and ended here by their own pids.
#
# Logs: target/soak/<server>-<run>.log. Exits non-zero when any run failed, naming the tests.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
runs="${SOAK_RUNS:-10}"
load="${SOAK_LOAD:-$(nproc)}"
cargo="${CARGO:-cargo}"
logs="$root/target/soak"
mkdir -p "$logs"

servers=("7.0:$(command -v redis-server)")
if [ -x "$root/.redis8/redis-server" ]; then
    servers+=("8.2:$root/.redis8/redis-server")
else
    echo "soak-tests: no .redis8/redis-server (run scripts/redis8.sh): Redis 8.2 not soaked" >&2
    [ -n "${CI:-}" ] && exit 1
fi
if [ -x "$root/.valkey9/valkey-server" ]; then
    servers+=("valkey9.1:$root/.valkey9/valkey-server")
else
    echo "soak-tests: no .valkey9/valkey-server (run scripts/valkey9.sh): Valkey 9.1 not soaked" >&2
    [ -n "${CI:-}" ] && exit 1
fi

# Build everything first, without the competing load: the module itself (the tests load
# target/debug/libredis_fence.so, which `cargo build --tests` does not rebuild), then the tests.
"$cargo" build --workspace -q || exit 1
"$cargo" build --tests --workspace -q || exit 1

load_pids=()
stop_load() {
    local pid
    for pid in "${load_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    load_pids=()
}
trap stop_load EXIT
for _ in $(seq 1 "$load"); do
    yes >/dev/null &
    load_pids+=($!)
done
echo "soak-tests: $runs runs per server, competing load: $load busy processes (pids ${load_pids[*]})"

declare -A passed failed
failures=()
started=$(date +%s)
for run in $(seq 1 "$runs"); do
    for entry in "${servers[@]}"; do
        name="${entry%%:*}"
        server="${entry#*:}"
        log="$logs/$name-$run.log"
        t0=$(date +%s)
        ok=1
        {
            REDIS_SERVER="$server" "$cargo" test -q --no-fail-fast --test '*' || ok=0
            REDIS_SERVER="$server" "$cargo" test -q --no-fail-fast -p redis-fence-client || ok=0
            echo "soak-run-result ok=$ok"
        } >"$log" 2>&1
        grep -q '^soak-run-result ok=1$' "$log" || ok=0
        secs=$(($(date +%s) - t0))
        if [ "$ok" = 1 ]; then
            passed[$name]=$((${passed[$name]:-0} + 1))
            echo "soak-tests: run $run on Redis $name: passed in ${secs} s"
        else
            failed[$name]=$((${failed[$name]:-0} + 1))
            names=$(grep -E '^test .* \.\.\. FAILED$|^---- .* ----$' "$log" | sed -E 's/^test (.*) \.\.\. FAILED$/\1/; s/^---- (.*) (stdout|stderr) ----$/\1/' | sort -u | tr '\n' ' ')
            failures+=("Redis $name run $run: ${names:-see $log}")
            echo "soak-tests: run $run on Redis $name: FAILED in ${secs} s: ${names:-see $log}"
        fi
    done
done
stop_load

echo "soak-tests: done in $(($(date +%s) - started)) s under a load of $load busy processes"
total_failed=0
for entry in "${servers[@]}"; do
    name="${entry%%:*}"
    echo "soak-tests: Redis $name: ${passed[$name]:-0} passed, ${failed[$name]:-0} failed of $runs runs"
    total_failed=$((total_failed + ${failed[$name]:-0}))
done
for f in "${failures[@]}"; do
    echo "soak-tests: FAILED: $f"
done
[ "$total_failed" -eq 0 ]
