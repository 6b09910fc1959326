#!/usr/bin/env bash
# Leak check: Debian's redis-server under valgrind with the fence module loaded, a mixed
# workload (every command, waits granted, timed out, disconnected and unblocked, refunds,
# expiries, errors, key commands, MULTI, keyspace events, DEBUG RELOAD, replication into it and
# a promotion, FLUSHALL), a clean SHUTDOWN NOSAVE, then the valgrind log is read.
#
# Fails (exit 1) when a "definitely lost" record or a memcheck error (invalid read or write,
# uninitialised value, bad free...) has a stack that passes through the module, or when the
# server or the workload misbehaved (exit 2). Leaks and errors elsewhere (Redis itself) are
# reported, not counted.
#
# Environment:
#   REDIS_SERVER   the server binary (default /usr/bin/redis-server, Debian's build)
#   FENCE_MODULE   the module (default target/debug/libredis_fence.so, built first)
#   EXTRA_MODULE   another module to load too, EXTRA_COMMANDS commands to send it (to check
#                  that a planted leak is caught, e.g. a tiny C module that leaks on a command)
#   LEAK_PATTERN   what marks a stack as the module's (extended regex; default
#                  'redis_fence|libredis_fence|redis_module::|__rust_')
#   VALGRIND_LOG   where to keep the valgrind log (default: in the temporary directory)
#
# The default pattern matches the module's own frames and those of its Rust runtime
# (redis_module::alloc, __rust_alloc): with only this Rust module loaded, those are its blocks.
#
# Checking the check (measured: exit 1, "192 bytes in 3 blocks" through the module): a Rust
# module built with redis-module 2.0.8 whose command does `std::mem::forget(vec![7u8; 64])`,
#   EXTRA_MODULE=/tmp/leaky-rs/target/debug/libleaky.so EXTRA_COMMANDS="leaky.rs leaky.rs leaky.rs" \
#       ./scripts/valgrind.sh
# and a C module whose command leaks RedisModule_Alloc(100): PASS with the default pattern
# (300 bytes definitely lost, reported as not the module's), exit 1 with LEAK_PATTERN=leaky.
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
REDIS_SERVER=${REDIS_SERVER:-/usr/bin/redis-server}
PATTERN=${LEAK_PATTERN:-'redis_fence|libredis_fence|redis_module::|__rust_'}
WORK=$(mktemp -d /tmp/fence-valgrind.XXXXXX)
LOG=${VALGRIND_LOG:-$WORK/valgrind.log}
FAILED=0
VG_PID=
MASTER_PID=

die() { echo "valgrind.sh: $*" >&2; exit 2; }

for tool in valgrind redis-cli "$REDIS_SERVER"; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install valgrind redis-server)"
done

if [[ -z "${FENCE_MODULE:-}" ]]; then
    cargo build --quiet || die "cargo build failed"
    MODULE=$ROOT/target/debug/libredis_fence.so
else
    MODULE=$(realpath "$FENCE_MODULE")
fi
[[ -f "$MODULE" ]] || die "module not found: $MODULE"

free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000)) # below the ephemeral range
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
}

PORT=$(free_port)
MPORT=$(free_port)

cleanup() {
    [[ -n "$MASTER_PID" ]] && kill "$MASTER_PID" 2>/dev/null
    [[ -n "$VG_PID" ]] && kill "$VG_PID" 2>/dev/null
    jobs -p | xargs -r kill 2>/dev/null
    # Keep the logs, drop the rest.
    rm -f "$WORK"/*.rdb "$WORK"/*.out "$WORK"/bulk.txt "$WORK"/s1.dump
    true
}
trap cleanup EXIT

cli() { redis-cli -p "$PORT" "$@"; }

# bg OUT CMD...: a client in the background (a waiter), its reply into OUT; wait_bg waits for
# those clients only (a bare `wait` would wait for the server too).
BG=()
bg() {
    local out=$1
    shift
    cli "$@" >"$out" &
    BG+=($!)
}
wait_bg() {
    wait "${BG[@]}"
    BG=()
}

# expect PATTERN CMD...: the reply must match the (glob) pattern.
expect() {
    local want=$1 got
    shift
    got=$(cli "$@" 2>&1)
    # shellcheck disable=SC2053
    if [[ "$got" != $want ]]; then
        echo "workload: '$*' replied '$got', expected '$want'" >&2
        FAILED=1
    fi
}

wait_ping() {
    local port=$1 i
    for i in $(seq 1 300); do
        [[ "$(redis-cli -p "$port" PING 2>/dev/null)" == PONG ]] && return 0
        sleep 0.2
    done
    return 1
}

# Waits until N clients are blocked on the valgrind server.
wait_blocked() {
    local n=$1 i
    for i in $(seq 1 300); do
        [[ "$(cli INFO clients | tr -d '\r' | sed -n 's/^blocked_clients://p')" -ge "$n" ]] && return 0
        sleep 0.1
    done
    echo "workload: never saw $n blocked clients" >&2
    FAILED=1
}

extra=()
if [[ -n "${EXTRA_MODULE:-}" ]]; then
    extra=(--loadmodule "$(realpath "$EXTRA_MODULE")")
fi

# wait_up PORT PID: until the server answers, or its process is gone.
wait_up() {
    local port=$1 pid=$2 i
    for i in $(seq 1 300); do
        [[ "$(redis-cli -p "$port" PING 2>/dev/null)" == PONG ]] && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}

for attempt in 1 2 3 4 5; do
    echo "valgrind.sh: $REDIS_SERVER on port $PORT with $MODULE ${EXTRA_MODULE:+and $EXTRA_MODULE}"
    valgrind --leak-check=full --show-leak-kinds=definite,possible --errors-for-leak-kinds=definite \
        --num-callers=60 --error-exitcode=99 --log-file="$LOG" \
        "$REDIS_SERVER" --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK" --logfile "$WORK/redis.log" --enable-debug-command yes \
        --loadmodule "$MODULE" "${extra[@]}" &
    VG_PID=$!
    wait_up "$PORT" "$VG_PID" && break
    kill "$VG_PID" 2>/dev/null
    wait "$VG_PID" 2>/dev/null
    VG_PID=
    grep -q "Address already in use" "$WORK/redis.log" 2>/dev/null ||
        die "the server under valgrind did not start; see $LOG and $WORK/redis.log"
    rm -f "$WORK/redis.log"
    PORT=$(free_port)
done
[[ -n "$VG_PID" ]] || die "no free port for the server"
START=$(date +%s)

# --- every command, the happy paths and the refusals ---------------------------------------
T=$(cli LOCK.ACQUIRE vg:lock a 60000)
[[ "$T" =~ ^[0-9]+$ ]] || { echo "workload: no token ($T)" >&2; FAILED=1; }
expect "$T" LOCK.ACQUIRE vg:lock a 60000
expect "" LOCK.ACQUIRE vg:lock b 60000
expect "$T" LOCK.RENEW vg:lock a 60000
expect "" LOCK.RENEW vg:lock b 60000
cli LOCK.STATUS vg:lock >/dev/null
cli -3 LOCK.STATUS vg:lock >/dev/null
expect 0 LOCK.RELEASE vg:lock b
expect OK STOCK.SET vg:sku 100
expect 105 STOCK.ADD vg:sku 5
expect 105 STOCK.GET vg:sku
expect 104 STOCK.DEDUCT vg:sku 1
expect 102 STOCK.DEDUCT vg:sku 2 ID order-1
expect 102 STOCK.DEDUCT vg:sku 2 ID order-1
expect 101 STOCK.DEDUCT vg:sku 1 FENCE "$T" ID order-2
expect "STALE*" STOCK.DEDUCT vg:sku 1 FENCE $((T - 1))
expect "" STOCK.DEDUCT vg:sku 1000
expect 2 STOCK.REFUND vg:sku order-1
expect 0 STOCK.REFUND vg:sku order-1
expect 0 STOCK.REQUEST vg:sku order-1
expect 1 STOCK.REQUEST vg:sku order-2
expect "" STOCK.REQUEST vg:sku nobody
cli STOCK.INFO vg:sku >/dev/null
cli -3 STOCK.INFO vg:sku >/dev/null
expect 1 LOCK.RELEASE vg:lock a
expect OK SET vg:plain 10
expect 9 STOCK.DEDUCT vg:plain 1
expect 10 STOCK.ADD vg:plain 1
expect 10 STOCK.GET vg:plain
cli STOCK.INFO vg:plain >/dev/null
expect "ERR*" STOCK.REFUND vg:plain x
expect "ERR*internal*" FENCE.LOCK vg:lock a 1 1
expect "ERR*internal*" FENCE.STOCK vg:sku 1 0 0 RESET
for bad in "LOCK.ACQUIRE" "LOCK.ACQUIRE k" "LOCK.ACQUIRE k o 0" "LOCK.ACQUIRE k o 10 WAIT" \
    "LOCK.ACQUIRE k o 10 WAIT -1" "LOCK.ACQUIRE k o 10 NOPE 1" "LOCK.ACQUIRE k o 10 WAIT 1 WAIT 1" \
    "LOCK.RENEW k o x" "LOCK.RELEASE k" "STOCK.SET k -1" "STOCK.ADD k 0" \
    "STOCK.ADD vg:sku 9223372036854775807" "STOCK.DEDUCT vg:sku 0" "STOCK.DEDUCT vg:sku 1 ID" \
    "STOCK.DEDUCT vg:sku 1 FENCE 0" "STOCK.DEDUCT vg:sku 1 FENCE 99999999999999999" \
    "STOCK.DEDUCT vg:sku 1 ID a ID b" "STOCK.GET vg:lock2" "LOCK.STATUS vg:sku" \
    "STOCK.DEDUCT vg:txt 1" "CONFIG SET fence.max-ttl-ms 0"; do
    # shellcheck disable=SC2086
    cli $bad >/dev/null
done
cli SET vg:txt hello >/dev/null
expect "ERR*" STOCK.DEDUCT vg:txt 1
expect "WRONGTYPE*" LOCK.ACQUIRE vg:txt o 100
cli LPUSH vg:list a >/dev/null
expect "WRONGTYPE*" STOCK.DEDUCT vg:list 1
expect "ERR*" LOCK.ACQUIRE vg:lock "" 100
expect "ERR*" LOCK.ACQUIRE vg:lock "$(head -c 600 /dev/zero | tr '\0' x)" 100
cli COMMAND DOCS LOCK.ACQUIRE STOCK.DEDUCT >/dev/null
cli COMMAND INFO LOCK.ACQUIRE STOCK.DEDUCT FENCE.LOCK >/dev/null
cli COMMAND GETKEYS STOCK.DEDUCT vg:sku 1 >/dev/null
cli CONFIG SET fence.max-ledger-entries 50 >/dev/null
cli CONFIG GET 'fence.*' >/dev/null
cli INFO fence >/dev/null

# --- a bulk of random calls over a few keys (many ledger ids, refunds, errors) ---------------
CMDS=$WORK/bulk.txt
for i in $(seq 1 6000); do
    k=$((RANDOM % 6)); o=o$((RANDOM % 4)); id=id$((RANDOM % 80)); q=$((RANDOM % 4))
    ttl=$((RANDOM % 3000 + 1))
    case $((RANDOM % 12)) in
        0) echo "LOCK.ACQUIRE bl:lock:$k $o $ttl" ;;
        1) echo "LOCK.RENEW bl:lock:$k $o $ttl" ;;
        2) echo "LOCK.RELEASE bl:lock:$k $o" ;;
        3) echo "LOCK.STATUS bl:lock:$k" ;;
        4) echo "STOCK.SET bl:sku:$k $((RANDOM % 200))" ;;
        5) echo "STOCK.ADD bl:sku:$k $q" ;;
        6 | 7) echo "STOCK.DEDUCT bl:sku:$k $q ID $id" ;;
        8) echo "STOCK.DEDUCT bl:sku:$k $q FENCE $((T + RANDOM))" ;;
        9) echo "STOCK.REFUND bl:sku:$k $id" ;;
        10) echo "STOCK.REQUEST bl:sku:$k $id" ;;
        11) echo "STOCK.INFO bl:sku:$k" ;;
    esac
done >"$CMDS"
cli <"$CMDS" >/dev/null
cli CONFIG SET fence.max-ledger-entries 1000000 >/dev/null

# --- keyspace events, key commands and callbacks --------------------------------------------
cli CONFIG SET notify-keyspace-events KEA >/dev/null
T2=$(cli LOCK.ACQUIRE vg:k1 a 60000)
cli STOCK.SET vg:s1 50 >/dev/null
cli STOCK.DEDUCT vg:s1 5 ID x1 >/dev/null
expect 1 COPY vg:k1 vg:k1copy
expect 1 COPY vg:s1 vg:s1copy
expect OK RENAME vg:k1copy vg:k1moved
expect 1 UNLINK vg:s1copy
cli MEMORY USAGE vg:k1 >/dev/null
cli MEMORY USAGE vg:s1 >/dev/null
cli DEBUG DIGEST-VALUE vg:k1 vg:s1 >/dev/null
cli DEBUG DIGEST >/dev/null
cli DEBUG OBJECT vg:s1 >/dev/null
redis-cli -p "$PORT" --no-raw DUMP vg:s1 >/dev/null
cli --raw DUMP vg:s1 | head -c -1 >"$WORK/s1.dump"
cli -x RESTORE vg:s1restored 0 <"$WORK/s1.dump" >/dev/null
cli -x RESTORE vg:s1restored 0 REPLACE <"$WORK/s1.dump" >/dev/null
expect 45 STOCK.GET vg:s1restored
cli -x RESTORE vg:bad 0 <<<"garbage" >/dev/null
cli PEXPIRE vg:s1 100 >/dev/null
expect 1 LOCK.RELEASE vg:k1moved a
printf 'MULTI\nLOCK.ACQUIRE vg:k1 b 1000 WAIT 1000\nSTOCK.DEDUCT vg:s1 1\nEXEC\n' | cli >/dev/null
cli EVAL "return redis.call('LOCK.ACQUIRE', KEYS[1], 'lua', 1000, 'WAIT', 1000)" 1 vg:k1 >/dev/null
cli CONFIG SET notify-keyspace-events "" >/dev/null
[[ -n "$T2" ]] || FAILED=1

# --- waits: granted by release, by expiry (timer), by DEL and FLUSHALL; timed out; ----------
# --- disconnected; unblocked; answered WRONGTYPE ---------------------------------------------
expect "[0-9]*" LOCK.ACQUIRE vg:w holder 60000
for n in 1 2 3; do
    bg "$WORK/w$n.out" LOCK.ACQUIRE vg:w "w$n" 60000 WAIT 20000
    wait_blocked "$n"
done
expect 1 LOCK.RELEASE vg:w holder
expect 1 LOCK.RELEASE vg:w w1
expect 1 LOCK.RELEASE vg:w w2
wait_bg
for n in 1 2 3; do
    grep -Eq '^[0-9]+$' "$WORK/w$n.out" || { echo "workload: waiter w$n got $(cat "$WORK/w$n.out")" >&2; FAILED=1; }
done
expect "" LOCK.ACQUIRE vg:w late 60000 WAIT 100 # times out
expect 1 LOCK.RELEASE vg:w w3
# A lease expiring with a waiter: the module's timer hands it over.
expect "[0-9]*" LOCK.ACQUIRE vg:e holder 300
expect "[0-9]*" LOCK.ACQUIRE vg:e waiter 60000 WAIT 20000
# A waiter whose client goes away.
expect "[0-9]*" LOCK.ACQUIRE vg:d holder 60000
timeout 2 redis-cli -p "$PORT" LOCK.ACQUIRE vg:d gone 60000 WAIT 60000 >/dev/null
# A waiter unblocked by CLIENT UNBLOCK, another answered WRONGTYPE when SET replaces the lock,
# another granted when the key is deleted.
expect "[0-9]*" LOCK.ACQUIRE vg:u holder 60000
bg "$WORK/u.out" LOCK.ACQUIRE vg:u unblocked 60000 WAIT 60000
wait_blocked 1
ID=$(cli CLIENT LIST | tr -d '\r' | grep ' flags=b ' | sed -n 's/^id=\([0-9]*\) .*/\1/p' | head -1)
expect 1 CLIENT UNBLOCK "$ID"
wait_bg
[[ "$(cat "$WORK/u.out")" == "" ]] || { echo "workload: CLIENT UNBLOCK: $(cat "$WORK/u.out")" >&2; FAILED=1; }
bg "$WORK/t.out" LOCK.ACQUIRE vg:d wrongtype 60000 WAIT 60000
wait_blocked 1
cli SET vg:d overwritten >/dev/null
wait_bg
grep -q WRONGTYPE "$WORK/t.out" || { echo "workload: SET over a waited lock: $(cat "$WORK/t.out")" >&2; FAILED=1; }
expect "[0-9]*" LOCK.ACQUIRE vg:del holder 60000
bg "$WORK/del.out" LOCK.ACQUIRE vg:del after-del 60000 WAIT 60000
wait_blocked 1
expect 1 DEL vg:del
wait_bg
grep -Eq '^[0-9]+$' "$WORK/del.out" || { echo "workload: DEL hand-off: $(cat "$WORK/del.out")" >&2; FAILED=1; }

# --- expiries: many short leases vanish through Redis's own expiry ---------------------------
for i in $(seq 1 300); do echo "LOCK.ACQUIRE vg:short:$i o $((RANDOM % 50 + 1))"; done | cli >/dev/null
for i in $(seq 1 50); do echo "STOCK.SET vg:ttl:$i 5"; echo "PEXPIRE vg:ttl:$i $((RANDOM % 50 + 1))"; done | cli >/dev/null
sleep 2
cli SCAN 0 COUNT 1000 >/dev/null

# --- DEBUG RELOAD with locks, stocks and ledgers in memory -----------------------------------
cli LOCK.ACQUIRE vg:r a 60000 >/dev/null
cli STOCK.SET vg:rs 10 >/dev/null
cli STOCK.DEDUCT vg:rs 1 ID r1 FENCE "$T" >/dev/null
expect OK DEBUG RELOAD
expect 9 STOCK.GET vg:rs
expect 1 STOCK.REQUEST vg:rs r1

# --- replication into this server, then a promotion with a waiter (UNBLOCKED) ----------------
"$REDIS_SERVER" --port "$MPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
    --dbfilename master.rdb --logfile "$WORK/master.log" --loadmodule "$MODULE" &
MASTER_PID=$!
if wait_ping "$MPORT"; then
    mcli() { redis-cli -p "$MPORT" "$@"; }
    mcli LOCK.ACQUIRE rep:lock m 60000 >/dev/null
    mcli STOCK.SET rep:sku 100 >/dev/null
    mcli STOCK.DEDUCT rep:sku 1 ID m1 >/dev/null
    bg "$WORK/unblocked.out" LOCK.ACQUIRE vg:r other 60000 WAIT 60000
    wait_blocked 1
    expect OK REPLICAOF 127.0.0.1 "$MPORT"
    wait_bg
    grep -q UNBLOCKED "$WORK/unblocked.out" || { echo "workload: waiter on a new replica: $(cat "$WORK/unblocked.out")" >&2; FAILED=1; }
    for i in $(seq 1 300); do
        [[ "$(cli INFO replication | tr -d '\r' | sed -n 's/^master_link_status://p')" == up ]] && break
        sleep 0.2
    done
    for i in $(seq 1 200); do
        echo "LOCK.ACQUIRE rep:l:$((i % 20)) m $((RANDOM % 100 + 1))"
        echo "STOCK.DEDUCT rep:sku 1 ID id$i"
        echo "STOCK.REFUND rep:sku id$((i / 2))"
        echo "LOCK.RELEASE rep:l:$((i % 7)) m"
    done | mcli >/dev/null
    mcli WAIT 1 20000 >/dev/null
    expect "$(mcli STOCK.GET rep:sku)" STOCK.GET rep:sku
    expect OK REPLICAOF NO ONE
    kill "$MASTER_PID" 2>/dev/null
    wait "$MASTER_PID" 2>/dev/null
    MASTER_PID=
    expect "" LOCK.ACQUIRE rep:lock new-master 60000 # held by m, replicated
    expect 1 STOCK.REQUEST rep:sku m1
    expect "[0-9]*" LOCK.ACQUIRE rep:other new-master 60000
else
    echo "workload: the plain master did not start" >&2
    FAILED=1
fi

# --- FLUSHALL with locks, stocks and a waiter ------------------------------------------------
cli LOCK.ACQUIRE vg:f holder 60000 >/dev/null
cli STOCK.SET vg:fs 10 >/dev/null
cli STOCK.DEDUCT vg:fs 1 ID f1 >/dev/null
bg "$WORK/flush.out" LOCK.ACQUIRE vg:f after-flush 60000 WAIT 60000
wait_blocked 1
expect OK FLUSHALL
wait_bg
grep -Eq '^[0-9]+$' "$WORK/flush.out" || { echo "workload: FLUSHALL hand-off: $(cat "$WORK/flush.out")" >&2; FAILED=1; }

# --- a planted leak, when asked for ----------------------------------------------------------
if [[ -n "${EXTRA_COMMANDS:-}" ]]; then
    for c in $EXTRA_COMMANDS; do cli "$c" >/dev/null; done
fi

# Free every value before the shutdown (Redis does not free its dataset on the way out), so
# that what the module still holds afterwards is its own global state or a leak.
cli LOCK.ACQUIRE vg:end a 60000 >/dev/null
cli STOCK.SET vg:end2 3 >/dev/null
cli STOCK.DEDUCT vg:end2 1 ID e1 >/dev/null
INFO=$(cli INFO fence | tr -d '\r' | grep -E '^fence_(grants|waits_granted|waits_timed_out|expirations|deductions|refunds|replays|stale_refusals):' | tr '\n' ' ')
WORKLOAD_S=$(($(date +%s) - START))
expect OK FLUSHALL SYNC
cli SHUTDOWN NOSAVE >/dev/null
wait "$VG_PID"
VG_STATUS=$?
VG_PID=

if ! grep -q "LEAK SUMMARY\|All heap blocks were freed" "$LOG"; then
    echo "valgrind.sh: no leak summary in $LOG (exit status $VG_STATUS): the server did not shut down cleanly" >&2
    tail -40 "$LOG" >&2
    exit 2
fi

# Split the log into records (separated by empty '==pid==' lines); count definitely-lost
# records and memcheck errors, and those whose stack matches the module's pattern.
REPORT=$WORK/module-records.txt
read -r DEF_BLOCKS DEF_BYTES DEF_RECORDS MOD_BLOCKS MOD_BYTES MOD_RECORDS ERRORS MOD_ERRORS POSS_RECORDS MOD_POSS < <(
    awk -v pat="$PATTERN" -v out="$REPORT" '
        function num(s) { gsub(/,/, "", s); return s + 0 }
        function flush(   m, blocks, bytes, mine) {
            if (head == "") return
            mine = (rec ~ pat)
            if (head ~ /are definitely lost in loss record/) {
                # "300 bytes in 3 blocks ..." or "1,234 (48 direct, 1,186 indirect) bytes in 1 blocks ..."
                match(head, /^[0-9,]+/)
                bytes = num(substr(head, RSTART, RLENGTH))
                match(head, /in [0-9,]+ blocks/)
                split(substr(head, RSTART, RLENGTH), m, " ")
                blocks = num(m[2])
                db += blocks; dbytes += bytes; dr++
                if (mine) { mb += blocks; mbytes += bytes; mr++; print rec > out }
            } else if (head ~ /are possibly lost in loss record/) {
                pr++
                if (mine) { mpr++; print rec > out ".possible" }
            } else if (head ~ /^(Invalid (read|write|free)|Conditional jump|Use of uninitialised|Syscall param|Mismatched free|Source and destination overlap|Argument .* of function|Invalid alignment)/) {
                errs++
                if (mine) { merrs++; print rec > out }
            }
            head = ""; rec = ""
        }
        { sub(/^==[0-9]+== ?/, "") }
        /^$/ { flush(); next }
        { if (head == "") head = $0; rec = rec $0 "\n" }
        END { flush(); print db + 0, dbytes + 0, dr + 0, mb + 0, mbytes + 0, mr + 0, errs + 0, merrs + 0, pr + 0, mpr + 0 }
    ' "$LOG"
)

SUMMARY=$(grep -E "definitely lost:|indirectly lost:|possibly lost:|ERROR SUMMARY" "$LOG" | sed 's/^==[0-9]*== *//' | tr -s ' ' | paste -sd';' -)
echo "valgrind.sh: workload ${WORKLOAD_S}s under valgrind; server counters: $INFO"
echo "valgrind.sh: valgrind exit status $VG_STATUS; $SUMMARY"
echo "valgrind.sh: definitely lost in all: $DEF_BYTES bytes in $DEF_BLOCKS blocks ($DEF_RECORDS records); memcheck errors in all: $ERRORS"
echo "valgrind.sh: through the module (/$PATTERN/): definitely lost $MOD_BYTES bytes in $MOD_BLOCKS blocks ($MOD_RECORDS records), memcheck errors $MOD_ERRORS"
echo "valgrind.sh: (not counted) possibly lost: $POSS_RECORDS records, $MOD_POSS of them through the module${MOD_POSS:+ (see $REPORT.possible)}"
echo "valgrind.sh: log $LOG"

if [[ "$MOD_BLOCKS" -gt 0 || "$MOD_ERRORS" -gt 0 ]]; then
    echo "valgrind.sh: FAIL: the module leaks or misuses memory:" >&2
    cat "$REPORT" >&2
    exit 1
fi
if [[ "$FAILED" -ne 0 ]]; then
    echo "valgrind.sh: FAIL: the workload did not behave as expected (see above)" >&2
    exit 2
fi
echo "valgrind.sh: PASS"
