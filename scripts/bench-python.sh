#!/usr/bin/env bash
# `make bench-python`: what the Python package redis_fence costs per call over raw
# execute_command (clients/python/bench/overhead.py), against a throw-away redis-server with
# the fence module: a free port of 127.0.0.1, a temporary directory, stopped on the way out.
# With 2 cores or more the server runs on core 0 and the client on core 1 (taskset).
#
# The interpreter is target/python-venv's (redis-py pinned by clients/python/requirements-dev.txt),
# made by scripts/python-client.sh (`make python-client`); the package measured is the one in
# clients/python/src as it is now (PYTHONPATH), not the venv's installed copy, which may be
# older. Arguments go to overhead.py (e.g. --quick, --calls 50000).
#
#   REDIS_SERVER  the server binary (default redis-server on PATH)
#   FENCE_MODULE  the module (default <repo>/target/release/libredis_fence.so: make release)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
server="${REDIS_SERVER:-redis-server}"
module="${FENCE_MODULE:-$root/target/release/libredis_fence.so}"
venv="$root/target/python-venv"
python="$venv/bin/python"

die() {
    echo "bench-python: $*" >&2
    exit 1
}

[ -f "$module" ] || die "the fence module is not at $module: run 'make release' (or set FENCE_MODULE)"
# Absolute: the server runs in a directory of its own.
module="$(cd "$(dirname "$module")" && pwd)/$(basename "$module")"
"$server" --version >/dev/null 2>&1 ||
    die "the server $server does not run: install redis-server (make deps) or set REDIS_SERVER"

# The venv: scripts/python-client.sh makes it (and brings it up to date) with --venv-only when
# it has that option; otherwise an existing one is used as it is.
if grep -q -e '--venv-only' "$root/scripts/python-client.sh" 2>/dev/null; then
    "$root/scripts/python-client.sh" --venv-only || die "scripts/python-client.sh --venv-only failed"
fi
if ! "$python" -c 'import redis' 2>/dev/null; then
    die "no usable $venv (with redis-py): run 'make python-client' first"
fi

export PYTHONPATH="$root/clients/python/src" PYTHONDONTWRITEBYTECODE=1
if [ "${BENCH_PYTHON_PIN:-1}" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
    pin_server=(taskset -c 0)
    pin_client=(taskset -c 1)
else
    pin_server=()
    pin_client=()
fi

dir="$(mktemp -d "${TMPDIR:-/tmp}/redis-fence-bench-python.XXXXXX")"
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

free_port() {
    "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Answers as our own child (another process may have taken the port meanwhile).
ready() {
    "$python" - "$1" "$2" <<'EOF'
import sys, redis
try:
    info = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), socket_timeout=1).info("server")
except redis.RedisError:
    sys.exit(1)
sys.exit(0 if info.get("process_id") == int(sys.argv[2]) else 1)
EOF
}

port=""
for _attempt in 1 2 3 4 5; do
    candidate="$(free_port)"
    ${pin_server[@]+"${pin_server[@]}"} "$server" --port "$candidate" --bind 127.0.0.1 \
        --save "" --appendonly no --dir "$dir" --logfile "$dir/redis.log" \
        --loadmodule "$module" </dev/null >"$dir/stdio.log" 2>&1 &
    pid=$!
    deadline=$((SECONDS + 60))
    while [ "$SECONDS" -lt "$deadline" ] && kill -0 "$pid" 2>/dev/null; do
        if ready "$candidate" "$pid"; then
            port="$candidate"
            break 2
        fi
        sleep 0.02
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
    grep -q "Address already in use" "$dir/redis.log" "$dir/stdio.log" 2>/dev/null || break
done
if [ -z "$port" ]; then
    tail -n 40 "$dir/redis.log" "$dir/stdio.log" >&2 2>/dev/null || true
    die "redis-server with the fence module did not start (its log is above)"
fi

echo "bench-python: $("$server" --version | head -n 1); module $module;" \
    "client $("$python" -c 'import platform; print(platform.python_version())')" \
    "${pin_client[*]:-(not pinned)}" >&2
${pin_client[@]+"${pin_client[@]}"} "$python" "$root/clients/python/bench/overhead.py" \
    --host 127.0.0.1 --port "$port" "$@"
