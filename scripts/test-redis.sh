#!/usr/bin/env bash
# Runs the queue server's black-box suite against the Redis store, plus the multi-replica tests
# (tests/redis_replicas.rs): installs redis-server from Debian when missing, starts a private
# one on a free loopback port without persistence, runs the tests with MEMQ_TEST_REDIS pointing
# at it, and stops it on exit. Idempotent, reads no stdin, asks nothing (CI=true included).
#
#   scripts/test-redis.sh                            every queue-server test but durable mode
#   scripts/test-redis.sh -E 'binary(redis_replicas)' extra args go to the runner (nextest)
#
# Each test server uses a key prefix of its own (TestServer::start), so tests run in parallel
# on the one Redis; nothing is flushed.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    echo "==> installing redis-server (Debian package)"
    if [ "$(id -u)" = 0 ]; then
        SUDO=()
    else
        SUDO=(sudo -n)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

work=$(mktemp -d "${TMPDIR:-/tmp}/memq-redis.XXXXXX")
port=$(free_port)
# Loopback only, no RDB snapshots, no AOF: a scratch Redis that leaves nothing behind.
redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$work" \
    --logfile "$work/redis.log" --daemonize no &
redis_pid=$!
cleanup() {
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
    if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; then
        break
    fi
    if ! kill -0 "$redis_pid" 2>/dev/null; then
        cat "$work/redis.log" >&2 || true
        echo "redis-server exited at start" >&2
        exit 1
    fi
    sleep 0.1
done
[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ] || {
    echo "redis-server did not answer on 127.0.0.1:$port" >&2
    exit 1
}
echo "==> redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on 127.0.0.1:$port"

# Long-poll tests hold a thousand connections on each side of the loopback.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

export MEMQ_TEST_REDIS="redis://127.0.0.1:$port/0"
profile=default
[ "${CI:-}" = "true" ] && profile=ci
if command -v cargo-nextest >/dev/null 2>&1; then
    # The durable-mode tests run on a data directory (the memory store) whatever is set, so by
    # default they are left to scripts/test.sh's main run.
    if [ $# -eq 0 ]; then
        set -- -E 'not binary(durable)'
    fi
    cargo nextest run -p queue-server --locked --profile "$profile" --no-tests=fail "$@"
else
    cargo test -p queue-server --locked "$@"
fi
