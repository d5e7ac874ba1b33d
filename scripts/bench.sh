#!/usr/bin/env bash
# The HTTP benchmark suite: queue-server against a bare axum server answering 204 (the limit of
# the HTTP stack on this machine, queue-server/examples/baseline.rs), driven by the same load
# generator (wrk, one thread) at the same concurrency, back to back in the same run. Every figure
# is printed with its ratio to that baseline, because on a shared machine only ratios from one
# run mean something; the Redis store's figures (section redis, on a redis-server of its own,
# Debian's, installed when missing) with their ratio to the memory store. Loopback only; three
# to four minutes; every process it starts is stopped on exit. The table goes to stdout and to
# $CARGO_TARGET_DIR/bench/latest.txt (default target/bench/latest.txt); wrk's raw output to
# .../bench/raw/.
#
#   scripts/bench.sh                    # build --release, run everything
#   scripts/bench.sh enqueue lease_ack  # only these sections (names: see SECTIONS below)
#   BENCH_SECONDS=2 BENCH_ROUNDS=1 scripts/bench.sh  # shorter: 1 round of 2 s per side
# Each figure alternates baseline and server runs (BENCH_ROUNDS rounds of BENCH_SECONDS each,
# default 2 x 3 s) and reports the means, so that a burst of load from elsewhere on the machine
# weighs on both sides alike.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TARGET/bench
RAW=$OUT/raw
SECS=${BENCH_SECONDS:-3}
ROUNDS=${BENCH_ROUNDS:-2}
SECTIONS=(enqueue dequeue lease_ack stats batch latency producer consumers deep longpoll durable redis)
ONLY=("$@")
for name in "${ONLY[@]}"; do
    [[ " ${SECTIONS[*]} " == *" $name "* ]] || { echo "bench: no section $name (${SECTIONS[*]})" >&2; exit 2; }
done
want() { [ ${#ONLY[@]} = 0 ] || [[ " ${ONLY[*]} " == *" $1 "* ]]; }
CONNS=32
WORK=$(mktemp -d "${TMPDIR:-/tmp}/memq-bench.XXXXXX")
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p "$OUT" "$RAW"

PIDS=()
cleanup() {
    stop_all "${PIDS[@]}"
    stop_redis
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '  .. %s\n' "$*" >&2; }
die() {
    printf 'bench: %s\n' "$*" >&2
    exit 1
}

# 10,000 idle long polls need 10,000 sockets on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -ge 10100 ] || die "need at least 10100 open files (ulimit -n), have $(ulimit -n)"

command -v wrk >/dev/null 2>&1 || install_debian wrk
command -v curl >/dev/null || die "curl is needed"
if want redis; then
    { command -v redis-server && command -v redis-cli; } >/dev/null 2>&1 || install_debian redis-server
fi

log "building (release)"
cargo build --release --quiet -p queue-server -p producer -p consumer --bins
cargo build --release --quiet -p queue-server --example baseline
BIN=$TARGET/release
BASELINE_BIN=$BIN/examples/baseline

# ---------------------------------------------------------------------------------------------
# Processes

# start_server NAME [queue-server flags...]: starts a queue-server on a free loopback port; sets
# URL (http://127.0.0.1:PORT) and PID.
start_server() {
    local name=$1
    shift
    local logf=$WORK/$name.log
    RUST_LOG=warn,queue_server=info "$BIN/queue-server" --listen 127.0.0.1:0 "$@" 2>"$logf" &
    PID=$!
    PIDS+=("$PID")
    local addr="" i
    for i in $(seq 1 200); do
        addr=$(grep -o 'addr=127\.0\.0\.1:[0-9]*' "$logf" 2>/dev/null | head -1 | cut -d= -f2) || true
        [ -n "$addr" ] && break
        kill -0 "$PID" 2>/dev/null || die "queue-server $name did not start: $(cat "$logf")"
        sleep 0.05
    done
    [ -n "$addr" ] || die "queue-server $name did not say where it listens"
    URL=http://$addr
}

# start_baseline NAME: the bare 204 server; sets URL and PID.
start_baseline() {
    local out=$WORK/$1.out
    "$BASELINE_BIN" 127.0.0.1:0 >"$out" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    local addr="" i
    for i in $(seq 1 200); do
        addr=$(sed -n 's/^listening on //p' "$out")
        [ -n "$addr" ] && break
        sleep 0.05
    done
    [ -n "$addr" ] || die "baseline server did not start: $(cat "$out")"
    URL=http://$addr
}

stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# ready URL: waits until the server's /readyz answers 200 (a Redis replica: connected and
# subscribed to the wake channel).
ready() {
    local i
    for i in $(seq 1 100); do
        [ "$(curl -sS -o /dev/null -w '%{http_code}' "$1/readyz" 2>/dev/null)" = 200 ] && return 0
        sleep 0.1
    done
    die "$1 is not ready: $(curl -sS "$1/readyz" 2>&1)"
}

rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# ---------------------------------------------------------------------------------------------
# Load

Q=/memq/server/queues

# wrk_run NAME CONNS URL SCRIPT [wrk args...]: prints requests/s; raw output in $RAW/NAME.txt.
# SCRIPT "-": plain GETs.
wrk_run() {
    local name=$1 conns=$2 url=$3 script=$4 args=()
    shift 4
    [ "$script" = - ] || args=(-s "scripts/bench/$script")
    wrk -t1 -c"$conns" -d"${SECS}s" --timeout 10s "${args[@]}" "$@" "$url" >"$RAW/$name.txt" 2>&1 ||
        die "wrk $name failed: $(cat "$RAW/$name.txt")"
    if grep -q 'Non-2xx' "$RAW/$name.txt"; then
        die "wrk $name got error answers: $(grep 'Non-2xx' "$RAW/$name.txt")"
    fi
    awk '/^Requests\/sec:/ {printf "%.0f\n", $2}' "$RAW/$name.txt"
}

# wrk_pair KEY CONNS BASELINE_URL SERVER_URL SCRIPT [wrk args...]: ROUNDS rounds of baseline then
# server; prints "baseline_rps server_rps", the means. Raw output in $RAW/{base-,}KEY-ROUND.txt.
wrk_pair() {
    local key=$1 conns=$2 burl=$3 surl=$4 script=$5 r bsum=0 vsum=0 b v
    shift 5
    for ((r = 1; r <= ROUNDS; r++)); do
        b=$(wrk_run "base-$key-$r" "$conns" "$burl" "$script" "$@")
        v=$(wrk_run "$key-$r" "$conns" "$surl" "$script" "$@")
        bsum=$((bsum + b))
        vsum=$((vsum + v))
    done
    echo "$((bsum / ROUNDS)) $((vsum / ROUNDS))"
}

# wrk_spread KEY MODE SCRIPT URL...: one wrk per URL, all at once, the CONNS connections shared
# out among them; prints the sum of their rates. MODE req: requests/s; MODE pairs: the acks that
# lease-ack.lua counted, per second. Raw output in $RAW/KEY-I.txt (I from 1).
wrk_spread() {
    local key=$1 mode=$2 script=$3 n i=0 url f pids=() files=()
    shift 3
    n=$#
    for url in "$@"; do
        f=$RAW/$key-$((i + 1)).txt
        wrk -t1 -c$((CONNS / n + (i < CONNS % n ? 1 : 0))) -d"${SECS}s" --timeout 10s \
            -s "scripts/bench/$script" "$url" >"$f" 2>&1 &
        pids+=("$!")
        files+=("$f")
        i=$((i + 1))
    done
    for ((i = 0; i < n; i++)); do
        wait "${pids[i]}" || die "wrk $key-$((i + 1)) failed: $(cat "${files[i]}")"
    done
    ! grep -q 'Non-2xx' "${files[@]}" || die "wrk $key got error answers: $(grep 'Non-2xx' "${files[@]}")"
    if [ "$mode" = pairs ]; then
        awk '/^lease-ack:/ { if ($5 != 0) bad = 1; s += $3 / ($7 / 1e6) }
            END { if (bad) exit 1; printf "%.0f\n", s }' "${files[@]}" ||
            die "wrk $key: unexpected answers: $(grep -h '^lease-ack:' "${files[@]}")"
    else
        awk '/^Requests\/sec:/ { s += $2 } END { printf "%.0f\n", s }' "${files[@]}"
    fi
}

# p99 of a wrk --latency run, in ms.
p99_ms() {
    awk '$1 == "99%" {
        v = $2; unit = v; gsub(/[0-9.]/, "", unit); sub(/[a-z]+$/, "", v);
        if (unit == "us") v /= 1000; else if (unit == "s") v *= 1000;
        printf "%.2f\n", v }' "$RAW/$1.txt"
}

create() { curl -sS --fail -o /dev/null -X PUT "$1$Q/$2"; }
delete() { curl -sS --fail -o /dev/null -X DELETE "$1$Q/$2"; }
depth() { curl -sS --fail "$1$Q/$2" | jq .depth; }

# fill URL QUEUE N: N 16-byte items in 10,000-line batches over one connection.
LINES=$WORK/lines.txt
for i in $(seq 0 9999); do printf 'work-item-%06d\n' "$i"; done >"$LINES"
fill() {
    local url=$1 queue=$2 n=$3 args=() i
    for ((i = 0; i < n / 10000; i++)); do args+=("$url$Q/$queue/enqueue?batch=lines"); done
    curl -sS --fail --data-binary @"$LINES" "${args[@]}" >/dev/null
    [ "$(depth "$url" "$queue")" -ge "$n" ] || die "filling $queue: depth $(depth "$url" "$queue") < $n"
}

now() { date +%s.%N; }

# The baseline's rate for single POSTs, for the rows whose load is not wrk (producer, consumers).
BASE_POST=
base_post() {
    [ -n "$BASE_POST" ] || BASE_POST=$(wrk_run base-post $CONNS "$BASE/x" post.lua)
}

# ---------------------------------------------------------------------------------------------
# Results: one row per figure, printed in a fixed order and format so runs diff cleanly.

ROWS=()
# row KEY WHAT VALUE UNIT BASELINE RATIO TARGET VERDICT
row() { ROWS+=("$(printf '%-16s %-46s %12s %-8s %12s %7s  %-22s %s' "$@")"); }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
# meets VALUE OP LIMIT -> ok / BELOW
meets() { awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN {
    ok = (op == ">=") ? (v >= l) : (v <= l); print (ok ? "ok" : "MISSED") }'; }

# ---------------------------------------------------------------------------------------------
log "starting the baseline and a queue server"
start_baseline base
BASE=$URL
start_server mem
MEM=$URL

section_enqueue() {
    # Single enqueue at an empty queue, against the baseline with the same request.
    log "single enqueue (empty queue)"
    create "$MEM" e
    pair=$(wrk_pair enqueue-empty $CONNS "$BASE/x" "$MEM$Q/e/enqueue" post.lua)
    b=${pair% *} v=${pair#* }
    BASE_POST=$b
    r=$(ratio "$v" "$b")
    row enqueue_empty "single enqueue, from an empty queue" "$v" req/s "$b" "$r" ">= 0.80 x baseline" "$(meets "$r" ">=" 0.80)"
    delete "$MEM" e
}

section_dequeue() {
    # kuard dequeue from 2,000,000 queued.
    log "kuard dequeue (2,000,000 queued)"
    create "$MEM" d2m
    fill "$MEM" d2m 2000000
    pair=$(wrk_pair dequeue-2m $CONNS "$BASE/x" "$MEM$Q/d2m/dequeue" post-empty.lua)
    b=${pair% *} v=${pair#* }
    [ "$(depth "$MEM" d2m)" -gt 0 ] || die "dequeue-2m ran the queue dry; its rate would count 204s"
    r=$(ratio "$v" "$b")
    row dequeue_2m "kuard dequeue, from 2,000,000 queued" "$v" req/s "$b" "$r" ">= 0.80 x baseline" "$(meets "$r" ">=" 0.80)"
    delete "$MEM" d2m
}

section_lease_ack() {
    # Lease+ack pairs: the baseline runs the same script (every request a lease: no ids come back).
    log "lease+ack pairs"
    create "$MEM" lease
    fill "$MEM" lease 500000
    export BENCH_QUEUE_PATH=$Q/lease
    pair=$(wrk_pair lease-ack $CONNS "$BASE" "$MEM" lease-ack.lua)
    b=${pair% *}
    # Pairs are the acks that succeeded, over the time of all rounds.
    read -r acks errs us < <(cat "$RAW"/lease-ack-*.txt | awk '/^lease-ack:/ { a += $3; e += $5; u += $7 } END { print a, e, u }')
    [ "$errs" = 0 ] || die "lease-ack: $errs unexpected answers"
    v=$(awk -v a="$acks" -v us="$us" 'BEGIN { printf "%.0f", a / (us / 1e6) }')
    r=$(ratio "$v" "$b")
    row lease_ack "lease+ack pairs (2 requests each)" "$v" pairs/s "$b" "$r" ">= 0.40 x baseline" "$(meets "$r" ">=" 0.40)"
    delete "$MEM" lease
}

section_stats() {
    log "stats GET (4 queues)"
    for q in s1 s2 s3 s4; do
        create "$MEM" "$q"
        fill "$MEM" "$q" 10000
    done
    pair=$(wrk_pair stats $CONNS "$BASE/x" "$MEM/memq/server/stats" -)
    b=${pair% *} v=${pair#* }
    row stats_get "GET /stats (4 queues)" "$v" req/s "$b" "$(ratio "$v" "$b")" "-" "-"
    for q in s1 s2 s3 s4; do delete "$MEM" "$q"; done
}

section_batch() {
    log "batch enqueue, 10,000 lines per request"
    create "$MEM" b
    # A fresh queue each round: some 25 million items a round would otherwise pile up.
    local r bsum=0 vsum=0
    for ((r = 1; r <= ROUNDS; r++)); do
        bsum=$((bsum + $(wrk_run "base-batch-$r" $CONNS "$BASE/x" batch.lua)))
        vsum=$((vsum + $(wrk_run "batch-$r" $CONNS "$MEM$Q/b/enqueue?batch=lines" batch.lua)))
        delete "$MEM" b
        create "$MEM" b
    done
    b=$((bsum / ROUNDS)) v=$((vsum / ROUNDS))
    MEM_BATCH=$((v * 10000))
    row batch_enqueue "batch enqueue (10,000-line bodies)" "$MEM_BATCH" items/s "$((b * 10000))" "$(ratio "$v" "$b")" ">= 2,000,000 items/s" "$(meets "$MEM_BATCH" ">=" 2000000)"
    delete "$MEM" b
}

section_latency() {
    log "enqueue p99 at 64 clients"
    create "$MEM" p
    pair=$(wrk_pair enqueue-64 64 "$BASE/x" "$MEM$Q/p/enqueue" post.lua --latency)
    b=${pair% *} v=${pair#* }
    # The worse round's p99 of each side.
    bp99=$(for ((r = 1; r <= ROUNDS; r++)); do p99_ms "base-enqueue-64-$r"; done | sort -g | tail -1)
    p99=$(for ((r = 1; r <= ROUNDS; r++)); do p99_ms "enqueue-64-$r"; done | sort -g | tail -1)
    row enqueue_p99_64 "enqueue p99 latency, 64 clients" "$p99" ms "$bp99" "$(ratio "$p99" "$bp99")" "< 5 ms" "$(meets "$p99" "<=" 5)"
    row enqueue_64 "single enqueue, 64 clients" "$v" req/s "$b" "$(ratio "$v" "$b")" "-" "-"
    delete "$MEM" p
}

section_producer() {
    log "producer: 1,000,000 items"
    base_post
    t0=$(now)
    "$BIN/producer" --server "$MEM/memq/server" --queue prod --create --no-progress 'work-item-{000000..999999}' \
        >"$RAW/producer.txt" 2>&1 || die "producer failed: $(cat "$RAW/producer.txt")"
    t1=$(now)
    [ "$(depth "$MEM" prod)" = 1000000 ] || die "producer: depth $(depth "$MEM" prod), not 1000000"
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    v=$(awk -v s="$secs" 'BEGIN { printf "%.0f", 1000000 / s }')
    row producer_1m "producer, 1,000,000 items end to end (${secs} s)" "$v" items/s "$BASE_POST" "$(ratio "$v" "$BASE_POST")" "< 2 s" "$(meets "$secs" "<=" 2)"
    delete "$MEM" prod
}

section_consumers() {
    log "5 consumers drain 100,000 items"
    base_post
    create "$MEM" drain
    fill "$MEM" drain 100000
    t0=$(now)
    cpids=()
    for i in 1 2 3 4 5; do
        "$BIN/consumer" --server "$MEM/memq/server" --queue drain --work noop >"$RAW/consumer-$i.txt" 2>&1 &
        cpids+=("$!")
        PIDS+=("$!")
    done
    for pid in "${cpids[@]}"; do wait "$pid" || die "a consumer failed: $(cat "$RAW"/consumer-*.txt)"; done
    t1=$(now)
    acked=$(curl -sS "$MEM$Q/drain" | jq .acked)
    [ "$acked" = 100000 ] || die "consumers acked $acked, not 100000"
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    v=$(awk -v s="$secs" 'BEGIN { printf "%.0f", 100000 / s }')
    row consumers_100k "5 consumers drain 100,000 no-op items (${secs} s)" "$v" items/s "$BASE_POST" "$(ratio "$v" "$BASE_POST")" "< 10 s" "$(meets "$secs" "<=" 10)"
    delete "$MEM" drain
}

section_deep() {
    # Deep queue: a fresh server, so that its RSS growth is the items' alone.
    log "3,000,000 queued items: memory, enqueue, dequeue"
    start_server deep
    DEEP=$URL
    DEEP_PID=$PID
    create "$DEEP" deep
    rss0=$(rss_kb "$DEEP_PID")
    fill "$DEEP" deep 3000000
    rss1=$(rss_kb "$DEEP_PID")
    per=$(awk -v a="$rss0" -v b="$rss1" 'BEGIN { printf "%.1f", (b - a) * 1024 / 3000000 }')
    beyond=$(awk -v p="$per" 'BEGIN { printf "%.1f", p - 16 }')
    row rss_per_item "RSS per queued 16-byte item (3,000,000)" "$per" B/item 16 "$(ratio "$per" 16)" "-" "-"
    row rss_beyond_body "  of which beyond the body" "$beyond" B/item "-" "-" "<= 64 B/item" "$(meets "$beyond" "<=" 64)"
    pair=$(wrk_pair enqueue-3m $CONNS "$BASE/x" "$DEEP$Q/deep/enqueue" post.lua)
    b=${pair% *} v=${pair#* }
    r=$(ratio "$v" "$b")
    row enqueue_3m "single enqueue, at 3,000,000 queued" "$v" req/s "$b" "$r" ">= 0.80 x baseline" "$(meets "$r" ">=" 0.80)"
    pair=$(wrk_pair dequeue-3m $CONNS "$BASE/x" "$DEEP$Q/deep/dequeue" post-empty.lua)
    b=${pair% *} v=${pair#* }
    r=$(ratio "$v" "$b")
    row dequeue_3m "kuard dequeue, from 3,000,000 queued" "$v" req/s "$b" "$r" ">= 0.80 x baseline" "$(meets "$r" ">=" 0.80)"
    stop "$DEEP_PID"
}

# hold_polls NAME URL PID: sets HELD_RSS_KB and HELD (connections the server side holds).
hold_polls() {
    local name=$1 url=$2 pid=$3 port
    port=$(echo "$url" | sed -E 's#^http://[^:]+:([0-9]+).*#\1#')
    # wrk ends before the polls' 30 s run out, so each connection sends exactly one request.
    wrk -t1 -c10000 -d28s --timeout 60s -s scripts/bench/post-empty.lua "$url" >"$RAW/$name.txt" 2>&1 &
    local wpid=$!
    PIDS+=("$wpid")
    # A burst of 10,000 connects overflows the listen backlog; the dropped ones retry after 1, 3,
    # 7 s... so a slow accept loop shows here as a long wait.
    local i
    for i in $(seq 1 40); do
        sleep 0.5
        HELD=$(ss -Htn state established "( sport = :$port )" | wc -l)
        [ -n "${BENCH_DEBUG:-}" ] && log "held $HELD (port $port)"
        [ "$HELD" -ge 10000 ] && break
    done
    HELD_SECS=$(awk -v i="$i" 'BEGIN { printf "%.1f", i / 2 }')
    sleep 1
    HELD=$(ss -Htn state established "( sport = :$port )" | wc -l)
    HELD_RSS_KB=$(rss_kb "$pid")
    kill "$wpid" 2>/dev/null || true
    wait "$wpid" 2>/dev/null || true
}

section_longpoll() {
    # 10,000 idle long polls, each side on a fresh process; RSS read while they are held.
    log "10,000 idle long polls"
    start_baseline base-idle
    hold_polls base-longpoll "$URL/x?wait=30" "$PID"
    brss=$HELD_RSS_KB bconns=$HELD bsecs=$HELD_SECS
    stop "$PID"
    start_server idle
    create "$URL" idle
    hold_polls longpoll "$URL$Q/idle/dequeue?wait=30" "$PID"
    rss=$HELD_RSS_KB conns=$HELD secs=$HELD_SECS
    stop "$PID"
    mb=$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')
    bmb=$(awk -v k="$brss" 'BEGIN { printf "%.1f", k / 1024 }')
    row longpoll_10k "RSS holding $conns idle long polls (base: $bconns)" "$mb" MB "$bmb" "$(ratio "$mb" "$bmb")" "10,000 held, < 200 MB" "$([ "$conns" -ge 10000 ] && meets "$mb" "<=" 200 || echo MISSED)"
    row longpoll_connect "  time until all were connected" "$secs" s "$bsecs" "$(ratio "$secs" "$bsecs")" "-" "-"
}

section_durable() {
    # Durable: journal with fsync always (group commit), against the in-memory server just before.
    log "durable (--data-dir, --fsync always)"
    mkdir -p "$OUT/data"
    DATA=$(mktemp -d "$OUT/data/run.XXXXXX")
    start_server durable --data-dir "$DATA" --fsync always
    DUR=$URL
    DUR_PID=$PID
    for q in dp db; do
        create "$DUR" "$q"
        create "$MEM" "$q"
    done
    pair=$(wrk_pair durable-enqueue-64 64 "$MEM$Q/dp/enqueue" "$DUR$Q/dp/enqueue" post.lua)
    m=${pair% *} v=${pair#* }
    local r_enq
    r_enq=$(ratio "$v" "$m")
    row durable_enqueue "durable single enqueue, 64 clients" "$v" req/s "$m" "$r_enq" ">= 0.50 x in-memory" "$(meets "$r_enq" ">=" 0.50)"
    local r msum=0 vsum=0
    for ((r = 1; r <= ROUNDS; r++)); do
        msum=$((msum + $(wrk_run "memory-batch-$r" $CONNS "$MEM$Q/db/enqueue?batch=lines" batch.lua)))
        vsum=$((vsum + $(wrk_run "durable-batch-$r" $CONNS "$DUR$Q/db/enqueue?batch=lines" batch.lua)))
        for url in "$MEM" "$DUR"; do
            delete "$url" db
            create "$url" db
        done
    done
    m=$((msum / ROUNDS)) v=$((vsum / ROUNDS))
    row durable_batch "durable batch enqueue (10,000-line bodies)" "$((v * 10000))" items/s "$((m * 10000))" "$(ratio "$v" "$m")" ">= 500,000 items/s" "$(meets "$((v * 10000))" ">=" 500000)"
    stop "$DUR_PID"
    delete "$MEM" dp
    delete "$MEM" db
    rm -rf "$DATA"
}

section_redis() {
    # The Redis store (--redis): one replica, then three on the same Redis and key prefix with
    # the load spread over them, against the memory store ($MEM) in the same run. Each round runs
    # memory, 1 replica, 3 replicas in turn, so load from elsewhere weighs on all three alike.
    log "Redis store: 1 and 3 replicas on one redis-server, against the memory store"
    start_redis
    local redis=$REDIS_URL prefix=memq-bench urls=() rpids=() i r url e d a
    for i in 1 2 3; do
        start_server "redis-$i" --redis "$redis" --redis-prefix "$prefix"
        urls+=("$URL")
        rpids+=("$PID")
    done
    for url in "${urls[@]}"; do ready "$url"; done
    local r1=${urls[0]}
    for url in "$MEM" "$r1"; do
        create "$url" re
        create "$url" rl
    done
    fill "$MEM" rl 500000
    fill "$r1" rl 300000

    local m v1 v3 msum=0 v1sum=0 v3sum=0 enq=() la=()
    for url in "${urls[@]}"; do
        enq+=("$url$Q/re/enqueue")
        la+=("$url")
    done
    for ((r = 1; r <= ROUNDS; r++)); do
        m=$(wrk_spread "redis-memory-enqueue-$r" req post.lua "$MEM$Q/re/enqueue")
        v1=$(wrk_spread "redis-x1-enqueue-$r" req post.lua "${enq[0]}")
        v3=$(wrk_spread "redis-x3-enqueue-$r" req post.lua "${enq[@]}")
        msum=$((msum + m)) v1sum=$((v1sum + v1)) v3sum=$((v3sum + v3))
    done
    m=$((msum / ROUNDS)) v1=$((v1sum / ROUNDS)) v3=$((v3sum / ROUNDS))
    row redis_enq_memory "single enqueue, memory store" "$m" req/s "-" "-" "-" "-"
    row redis_enq_x1 "single enqueue, Redis store, 1 replica" "$v1" req/s "$m" "$(ratio "$v1" "$m")" "(x memory store)" "-"
    row redis_enq_x3 "single enqueue, Redis store, 3 replicas" "$v3" req/s "$m" "$(ratio "$v3" "$m")" "(x memory store)" "-"

    export BENCH_QUEUE_PATH=$Q/rl
    msum=0 v1sum=0 v3sum=0
    for ((r = 1; r <= ROUNDS; r++)); do
        m=$(wrk_spread "redis-memory-lease-ack-$r" pairs lease-ack.lua "$MEM")
        v1=$(wrk_spread "redis-x1-lease-ack-$r" pairs lease-ack.lua "${la[0]}")
        v3=$(wrk_spread "redis-x3-lease-ack-$r" pairs lease-ack.lua "${la[@]}")
        msum=$((msum + m)) v1sum=$((v1sum + v1)) v3sum=$((v3sum + v3))
    done
    m=$((msum / ROUNDS)) v1=$((v1sum / ROUNDS)) v3=$((v3sum / ROUNDS))
    for url in "$MEM" "$r1"; do
        [ "$(depth "$url" rl)" -gt 0 ] || die "Redis lease+ack ran $url's queue dry; its rate would count 204s"
    done
    row redis_la_memory "lease+ack pairs, memory store" "$m" pairs/s "-" "-" "-" "-"
    row redis_la_x1 "lease+ack pairs, Redis store, 1 replica" "$v1" pairs/s "$m" "$(ratio "$v1" "$m")" "(x memory store)" "-"
    row redis_la_x3 "lease+ack pairs, Redis store, 3 replicas" "$v3" pairs/s "$m" "$(ratio "$v3" "$m")" "(x memory store)" "-"
    # Redis's own time per script call under that load (usec_per_call of evalsha), for the record.
    rcli info commandstats >"$RAW/redis-commandstats.txt"
    for url in "$MEM" "$r1"; do
        delete "$url" re
        delete "$url" rl
    done

    # Round trips, counted by Redis rather than assumed: MONITOR logs every command a client
    # sends (and, marked "lua", each one a script runs) while one replica takes N enqueues, N
    # leases and N acks from curl, one request at a time. The other replicas are stopped first,
    # so that only this replica's background calls (the stats sampler, once a second; the sweep
    # of every queue, every 2 s) share the window; they are counted too.
    stop "${rpids[1]}"
    stop "${rpids[2]}"
    local n=1000 mon=$RAW/redis-monitor.txt counts=$RAW/redis-roundtrips.txt args=() ids
    create "$r1" rt
    # redis-cli itself in the background (not through rcli, a function: its subshell's pid
    # would be the one to stop).
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" monitor >"$mon" &
    local mon_pid=$!
    PIDS+=("$mon_pid")
    for i in $(seq 1 100); do
        grep -q '^OK' "$mon" 2>/dev/null && break
        sleep 0.05
    done
    grep -q '^OK' "$mon" || die "redis-cli monitor did not start"
    rcli echo memq-bench:enqueue >/dev/null
    args=()
    for ((i = 0; i < n; i++)); do args+=("$r1$Q/rt/enqueue"); done
    curl -sS --fail --data-binary work-item-000000 "${args[@]}" >/dev/null
    rcli echo memq-bench:dequeue >/dev/null
    args=()
    for ((i = 0; i < n; i++)); do args+=("$r1$Q/rt/dequeue?lease=30"); done
    ids=$(curl -sS --fail -X POST "${args[@]}" | grep -o '"lease":{"id":"[0-9A-Z]*"' | cut -d'"' -f6)
    [ "$(wc -l <<<"$ids")" = "$n" ] || die "round trips: $(wc -l <<<"$ids") leases, not $n"
    rcli echo memq-bench:ack >/dev/null
    args=()
    for i in $ids; do args+=("$r1$Q/rt/leases/$i/ack"); done
    curl -sS --fail -X POST "${args[@]}" >/dev/null
    rcli echo memq-bench:end >/dev/null
    for i in $(seq 1 100); do
        grep -q '"memq-bench:end"' "$mon" && break
        sleep 0.05
    done
    stop "$mon_pid"
    grep -q '"memq-bench:end"' "$mon" || die "redis-cli monitor missed the end of the window"
    read -r e d a < <(curl -sS --fail "$r1$Q/rt" | jq -r '"\(.enqueued) \(.dequeued) \(.acked)"')
    [ "$e $d $a" = "$n $n $n" ] || die "round trips: enqueued $e, dequeued $d, acked $a; not $n each"
    # Per phase: "PHASE COUNT COMMAND", the command as "evalsha:OP@QUEUE" for script calls, and
    # "PHASE COUNT (in-script)" for the commands the scripts ran.
    awk '
        $3 == "lua]" { if (ph != "") lua[ph]++; next }
        tolower($4) == "\"echo\"" && $5 ~ /^"memq-bench:/ {
            ph = $5; gsub(/"|memq-bench:/, "", ph); if (ph == "end") ph = ""; next }
        ph == "" { next }
        {
            c = tolower($4); gsub(/"/, "", c)
            if (c == "evalsha") {
                # EVALSHA sha numkeys key... op ...: the queue is the hash tag of its keys.
                nk = $6; gsub(/"/, "", nk); op = $(7 + nk); gsub(/"/, "", op)
                q = "?"; if (match($7, /\{[^}]*\}/)) q = substr($7, RSTART + 1, RLENGTH - 2)
                c = c ":" op "@" q
            }
            n[ph " " c]++
        }
        END {
            for (k in n) print k, n[k]
            for (p in lua) print p, "(in-script)", lua[p]
        }' "$mon" | awk '{ print $1, $3, $2 }' | sort -k1,1 -k2,2nr >"$counts"
    rm -f "$mon"
    log "Redis commands per phase of $n operations: $(tr '\n' ';' <"$counts")"
    local ph key own all
    for ph in enqueue dequeue ack; do
        own=$(awk -v p="$ph" '$1 == p && $3 == "evalsha:" p "@rt" { print $2 }' "$counts")
        all=$(awk -v p="$ph" '$1 == p && $3 != "(in-script)" { s += $2 } END { print s + 0 }' "$counts")
        case $ph in
            enqueue) key=redis_rt_enqueue ;;
            dequeue) key=redis_rt_lease ;;
            ack) key=redis_rt_ack ;;
        esac
        row "$key" "Redis calls/${ph/dequeue/lease}: ${own:-0} EVALSHA + $((all - ${own:-0})) other" \
            "$(awk -v a="$all" -v n="$n" 'BEGIN { printf "%.3f", a / n }')" calls/op "-" "-" \
            "1 EVALSHA per op" "$([ "${own:-0}" = "$n" ] && echo ok || echo MISSED)"
    done
    stop "${rpids[0]}"
    stop_redis
}

for name in "${SECTIONS[@]}"; do
    if want "$name"; then "section_$name"; fi
done
# A partial run does not replace the full table.
RESULT=latest.txt
[ ${#ONLY[@]} = 0 ] || RESULT=partial.txt

# ---------------------------------------------------------------------------------------------
cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
mem=$(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
{
    printf '# memq-rs scripts/bench.sh %s (commit %s)\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    printf '# machine: %s cores, %s, %s; load average before the run: %s\n' "$(nproc)" "$cpu" "$mem" "$LOAD"
    printf '# wrk -t1 -c%s, %s rounds of %ss per side, on loopback unless noted; baseline = bare axum 204 server, same request, same run\n' "$CONNS" "$ROUNDS" "$SECS"
    printf '%-16s %-46s %12s %-8s %12s %7s  %-22s %s\n' key what value unit baseline ratio target verdict
    printf '%s\n' "${ROWS[@]}"
} | tee "$OUT/$RESULT"
