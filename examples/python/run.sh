#!/usr/bin/env bash
# Runs seckill.py (threads, then asyncio with a limit per buyer), orders.py and fenced_sqlite.py
# against a throw-away redis-server with the fence module loaded: a free port of 127.0.0.1, a
# temporary directory, stopped on the way out. Installs nothing: PYTHON must have redis-py and
# the client package redis_fence (clients/python) installed, as the virtual environment
# `make python-client` makes (scripts/python-client.sh runs this script with PYTHON set to it).
# Extra arguments go to the first seckill.py (e.g. --stock 500 --buyers 64).
#
#   REDIS_SERVER  the server binary (default redis-server on PATH)
#   FENCE_MODULE  the module (default <repo>/target/debug/libredis_fence.so: cargo build first)
#   PYTHON        the interpreter (default <repo>/target/python-venv/bin/python when there is
#                 one, else python3)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
server="${REDIS_SERVER:-redis-server}"
module="${FENCE_MODULE:-$root/target/debug/libredis_fence.so}"
if [ -n "${PYTHON:-}" ]; then
    python="$PYTHON"
elif [ -x "$root/target/python-venv/bin/python" ]; then
    python="$root/target/python-venv/bin/python"
else
    python=python3
fi

if [ ! -f "$module" ]; then
    echo "run.sh: the fence module is not at $module: run 'cargo build' at the repository root" \
        "(or set FENCE_MODULE)" >&2
    exit 1
fi
if ! command -v "$server" >/dev/null 2>&1; then
    echo "run.sh: $server not found (install redis-server, or set REDIS_SERVER)" >&2
    exit 1
fi
if ! command -v "$python" >/dev/null 2>&1; then
    echo "run.sh: the interpreter $python is not found (set PYTHON)" >&2
    exit 1
fi
if ! import_error="$("$python" -c 'import redis, redis_fence' 2>&1)"; then
    echo "run.sh: $python cannot import redis-py and redis_fence:" >&2
    echo "$import_error" | tail -n 5 >&2
    echo "run.sh: run 'make python-client' (it makes target/python-venv with both and runs" \
        "this script with PYTHON=target/python-venv/bin/python), or set PYTHON to an" \
        "interpreter that has them" >&2
    exit 1
fi

dir="$(mktemp -d "${TMPDIR:-/tmp}/redis-fence-seckill.XXXXXX")"
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

# Answers PING as our own child (another process may have taken the port meanwhile).
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

# How long a started server may take to answer: a deadline, not a number of tries, since each
# try runs an interpreter, which a loaded machine makes slow.
start_timeout=60

port=""
for _attempt in 1 2 3 4 5; do
    candidate="$(free_port)"
    "$server" --port "$candidate" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$dir" --logfile "$dir/redis.log" --loadmodule "$module" \
        </dev/null >"$dir/stdio.log" 2>&1 &
    pid=$!
    deadline=$((SECONDS + start_timeout))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            break
        fi
        if ready "$candidate" "$pid"; then
            port="$candidate"
            break 2
        fi
        sleep 0.02
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    pid=""
    if ! grep -q "Address already in use" "$dir/redis.log" "$dir/stdio.log" 2>/dev/null; then
        break
    fi
done
if [ -z "$port" ]; then
    echo "run.sh: redis-server with the fence module did not start (or did not answer within" \
        "${start_timeout}s); its log:" >&2
    tail -n 40 "$dir/redis.log" "$dir/stdio.log" >&2 2>/dev/null || true
    exit 1
fi

# Each example against the server; the first failure stops the run with its exit code.
run_example() {
    local name="$1" status=0
    shift
    "$python" "$here/$name" --host 127.0.0.1 --port "$port" "$@" || status=$?
    if [ "$status" -ne 0 ]; then
        echo "run.sh: $name $* failed (exit $status); server log (tail):" >&2
        tail -n 20 "$dir/redis.log" >&2 || true
        exit "$status"
    fi
}
run_example seckill.py "$@"
# The same sale with asyncio buyers and a limit per buyer (LimitExceeded, STOCK.BUYER).
run_example seckill.py --async --limit 1
run_example orders.py
run_example fenced_sqlite.py
