#!/usr/bin/env bash
# Checks what `make run` does, as the README's quick start promises: `redis-server redis.conf`
# from the repository root loads the release module. Runs it on a free port (the config's own
# port may be busy), sends one command, and shuts it down.
set -euo pipefail
cd "$(dirname "$0")/.."
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
redis-server redis.conf --port "$port" --daemonize no > "$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do
    redis-cli -p "$port" ping > /dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { echo "run-check: redis-server redis.conf exited:"; cat "$log"; exit 1; }
    sleep 0.1
done
token=$(redis-cli -p "$port" LOCK.ACQUIRE run-check:lock owner 1000)
case "$token" in
    ''|*[!0-9]*) echo "run-check: LOCK.ACQUIRE replied '$token'"; cat "$log"; exit 1 ;;
esac
redis-cli -p "$port" MODULE LIST | grep -qx fence
redis-cli -p "$port" shutdown nosave > /dev/null 2>&1 || true
echo "run-check: redis-server redis.conf loads the module (LOCK.ACQUIRE gave token $token)"
