#!/usr/bin/env bash
# Loads a queue the way kuard's walkthrough does: create it, then one curl per work item.
#   scripts/load-queue.sh [SERVER_URL] [QUEUE] [COUNT]
#   defaults: http://localhost:8080/memq/server keygen 100
# With MEMQ_TOKEN set, every request carries it. For big loads use the producer binary instead,
# which sends batches (this script is one request per item, on purpose).
set -euo pipefail

server=${1:-${MEMQ_SERVER:-http://localhost:8080/memq/server}}
queue=${2:-keygen}
count=${3:-100}
server=${server%/}

if ! [[ $count =~ ^[0-9]+$ ]]; then
    echo "load-queue: COUNT must be a whole number, got '$count'" >&2
    exit 2
fi
auth=()
[ -n "${MEMQ_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $MEMQ_TOKEN")

# Create a work queue called "$queue" (kuard: curl -X PUT .../queues/keygen).
if ! curl -fsS "${auth[@]}" -X PUT "$server/queues/$queue" -o /dev/null; then
    echo "load-queue: cannot create queue '$queue' at $server; is queue-server running there?" >&2
    exit 1
fi

# Create $count work items and load up the queue.
for ((i = 0; i < count; i++)); do
    curl -fsS "${auth[@]}" -X POST "$server/queues/$queue/enqueue" -d "work-item-$i" -o /dev/null
    if (((i + 1) % 100 == 0)); then
        printf 'load-queue: %d/%d items\n' "$((i + 1))" "$count" >&2
    fi
done
echo "load-queue: $count items in queue '$queue' at $server" >&2
curl -fsS "${auth[@]}" "$server/stats"
echo
