#!/usr/bin/env bash
# Lints the server's /metrics with Prometheus' own `promtool check metrics` (Debian package
# `prometheus`, installed when missing; its service is not started), as a user would: a plain
# `curl /metrics | promtool check metrics`. promtool reads the Prometheus text format 0.0.4,
# which /metrics serves unless asked for OpenMetrics; tests/ops.rs checks the same naming
# rules on the OpenMetrics text, and tests/prometheus.rs has a real Prometheus scrape it.
# Works with CI=true and no stdin.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

command -v promtool >/dev/null 2>&1 || install_debian --no-install-recommends prometheus

target_dir="${CARGO_TARGET_DIR:-target}"
cargo build --locked --quiet -p queue-server --bin queue-server
port=$(free_port)
url="http://127.0.0.1:$port"
RUST_LOG=error "$target_dir/debug/queue-server" --listen "127.0.0.1:$port" --max-memory 64MiB &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -fsS "$url/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done

# Every family with samples: a queue with items, a lease, an answered request.
curl -fsS -X PUT "$url/memq/server/queues/keygen" >/dev/null
curl -fsS -X POST "$url/memq/server/queues/keygen/enqueue?batch=lines" --data-binary $'a\nb\nc' >/dev/null
curl -fsS -X POST "$url/memq/server/queues/keygen/dequeue?lease=30s" >/dev/null
curl -fsS -X POST "$url/memq/server/queues/keygen/dequeue?lease=30s&wait=0.1" >/dev/null

metrics=$(mktemp)
curl -fsS "$url/metrics" >"$metrics"
echo "promtool check metrics ($(grep -c '^# TYPE' "$metrics") families)"
if promtool check metrics <"$metrics"; then
    echo "metrics: ok"
    rm -f "$metrics"
else
    rm -f "$metrics"
    exit 1
fi
