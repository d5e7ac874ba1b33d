#!/usr/bin/env bash
# The seed's work-queue walkthrough on one machine, no cluster:
#   1. build the release binaries
#   2. start queue-server on a free loopback port (the "queue" ReplicaSet + Service)
#   3. load 100 items the seed's way: PUT the queue, then one curl enqueue per item
#   4. run 5 consumers in parallel, as the consumers Job (parallelism: 5) does, with --work keygen
#   5. print the stats, check that every consumer exited 0 and every item was acked
# The server is stopped on exit, whatever happens. Usage: scripts/demo.sh [COUNT] [CONSUMERS]
set -euo pipefail
cd "$(dirname "$0")/.."

count=${1:-100}
consumers=${2:-5}
queue=keygen
workdir=$(mktemp -d "${TMPDIR:-/tmp}/memq-demo.XXXXXX")
server_pid=

say() { printf '\n== %s\n' "$*"; }
fail() {
    printf '\ndemo FAILED: %s\n' "$*" >&2
    if [ -s "$workdir/server.log" ]; then
        printf -- '--- last lines of the server log (%s) ---\n' "$workdir/server.log" >&2
        tail -n 20 "$workdir/server.log" >&2
    fi
    exit 1
}
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT

for tool in cargo curl; do
    command -v "$tool" >/dev/null || fail "$tool is needed but not installed"
done
[[ $count =~ ^[0-9]+$ ]] || fail "COUNT must be a whole number, got '$count'"
[[ $consumers =~ ^[1-9][0-9]*$ ]] || fail "CONSUMERS must be a whole number from 1, got '$consumers'"

say "1/5 building (cargo build --release)"
cargo build --release -p queue-server -p consumer -p producer \
    || fail "the build failed"
bin=target/release

say "2/5 starting queue-server on a free loopback port"
free_port() {
    # Ask the kernel for a free port; the short window until the server binds it is fine here.
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
        || echo $((20000 + RANDOM % 20000))
}
port=$(free_port)
"$bin/queue-server" --listen "127.0.0.1:$port" >"$workdir/server.log" 2>&1 &
server_pid=$!
server="http://127.0.0.1:$port/memq/server"
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/healthz" -o /dev/null 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || fail "queue-server exited at start (port $port taken?)"
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/healthz" -o /dev/null || fail "queue-server did not answer on port $port"
echo "queue-server pid $server_pid at $server"

say "3/5 loading $count items the seed's way (curl PUT, then one curl enqueue per item)"
if [ -x scripts/load-queue.sh ] || [ -f scripts/load-queue.sh ]; then
    bash scripts/load-queue.sh "$server" "$queue" "$count" >/dev/null || fail "loading the queue failed"
else
    curl -fsS -X PUT "$server/queues/$queue" -o /dev/null || fail "cannot create queue $queue"
    for ((i = 0; i < count; i++)); do
        curl -fsS -X POST "$server/queues/$queue/enqueue" -d "work-item-$i" -o /dev/null \
            || fail "enqueue of work-item-$i failed"
    done
fi
curl -fsS "$server/queues/$queue"
echo

say "4/5 running $consumers consumers in parallel (--work keygen), like the consumers Job"
started=$SECONDS
pids=()
for ((c = 1; c <= consumers; c++)); do
    "$bin/consumer" --server "$server" --queue "$queue" --work keygen \
        >"$workdir/consumer-$c.out" 2>"$workdir/consumer-$c.log" &
    pids+=("$!")
done
failed=0
for ((c = 1; c <= consumers; c++)); do
    pid=${pids[$((c - 1))]}
    if wait "$pid"; then rc=0; else rc=$?; fi
    summary=$(grep 'consumer summary' "$workdir/consumer-$c.log" | tail -n 1 | sed 's/.*consumer summary //')
    keys=$(wc -l <"$workdir/consumer-$c.out")
    printf 'consumer %d: exit %d, %d keys printed; %s\n' "$c" "$rc" "$keys" "$summary"
    if [ "$rc" -ne 0 ]; then
        failed=1
        tail -n 5 "$workdir/consumer-$c.log" >&2
    fi
done
echo "drained in $((SECONDS - started))s; the first key of each consumer:"
head -q -n 1 "$workdir"/consumer-*.out

say "5/5 stats (curl $server/stats)"
stats=$(curl -fsS "$server/stats") || fail "cannot read the stats"
echo "$stats"
[ "$failed" -eq 0 ] || fail "a consumer exited non-zero"
# The stats row of our queue, checked without jq: all acked, nothing left anywhere.
for want in "\"acked\":$count" '"depth":0' '"inflight":0' '"delayed":0' '"dead":0'; do
    [[ $stats == *"$want"* ]] || fail "expected $want in the stats"
done
printf '\ndemo OK: %d items loaded the kuard way, done by %d consumers, all exited 0\n' "$count" "$consumers"
