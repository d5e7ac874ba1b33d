#!/usr/bin/env bash
# Lints the server's /metrics with Prometheus' own `promtool check metrics` (Debian package
# `prometheus`, installed when missing; its service is not started). promtool reads the
# Prometheus text format 0.0.4, which /metrics serves to a client asking for text/plain;
# tests/ops.rs checks the same naming rules on the OpenMetrics text.
# Works with CI=true and no stdin.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
    echo "installing promtool (Debian package prometheus)"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

target_dir="${CARGO_TARGET_DIR:-target}"
cargo build --locked --quiet -p queue-server --bin queue-server
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
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

metrics=$(mktemp)
curl -fsS -H 'Accept: text/plain;version=0.0.4' "$url/metrics" >"$metrics"
echo "promtool check metrics ($(grep -c '^# TYPE' "$metrics") families)"
if promtool check metrics <"$metrics"; then
    echo "metrics: ok"
    rm -f "$metrics"
else
    rm -f "$metrics"
    exit 1
fi
