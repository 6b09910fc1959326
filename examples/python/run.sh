#!/usr/bin/env bash
# Runs seckill.py, then orders.py, against a throw-away redis-server with the fence module loaded: a free port
# of 127.0.0.1, a temporary directory, stopped on the way out. Installs redis-py with pip
# when `import redis` fails. Extra arguments go to seckill.py (e.g. --stock 500 --buyers 64).
#
#   REDIS_SERVER  the server binary (default redis-server on PATH)
#   FENCE_MODULE  the module (default <repo>/target/debug/libredis_fence.so: cargo build first)
#   PYTHON        the interpreter (default python3)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
server="${REDIS_SERVER:-redis-server}"
module="${FENCE_MODULE:-$root/target/debug/libredis_fence.so}"
python="${PYTHON:-python3}"

if [ ! -f "$module" ]; then
    echo "run.sh: the fence module is not at $module: run 'cargo build' at the repository root" \
        "(or set FENCE_MODULE)" >&2
    exit 1
fi
if ! command -v "$server" >/dev/null 2>&1; then
    echo "run.sh: $server not found (install redis-server, or set REDIS_SERVER)" >&2
    exit 1
fi
if ! "$python" -c 'import redis' 2>/dev/null; then
    echo "run.sh: installing redis-py with pip" >&2
    # A Debian system Python refuses plain pip installs (PEP 668): then the user site.
    export PIP_ROOT_USER_ACTION=ignore
    "$python" -m pip install --quiet redis ||
        "$python" -m pip install --quiet --user --break-system-packages redis
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

status=0
"$python" "$here/seckill.py" --host 127.0.0.1 --port "$port" "$@" || status=$?
if [ "$status" -ne 0 ]; then
    echo "run.sh: seckill.py failed (exit $status); server log (tail):" >&2
    tail -n 20 "$dir/redis.log" >&2 || true
    exit "$status"
fi
"$python" "$here/orders.py" --host 127.0.0.1 --port "$port" || status=$?
if [ "$status" -ne 0 ]; then
    echo "run.sh: orders.py failed (exit $status); server log (tail):" >&2
    tail -n 20 "$dir/redis.log" >&2 || true
fi
exit "$status"
