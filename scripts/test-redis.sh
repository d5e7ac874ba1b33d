#!/usr/bin/env bash
# Runs the queue server's black-box suite against the Redis store, plus the multi-replica tests
# (tests/redis_replicas.rs): installs redis-server from Debian when missing, starts a private
# one on a free loopback port without persistence, runs the tests with MEMQ_TEST_REDIS pointing
# at it, and stops it on exit. Idempotent, reads no stdin, asks nothing (CI=true included).
#
#   scripts/test-redis.sh                            every queue-server test but durable mode and
#                                                    the real Kubernetes ones
#   scripts/test-redis.sh --cluster                  the same on a three-node Redis Cluster
#   scripts/test-redis.sh -E 'binary(redis_replicas)' extra args go to the runner (nextest)
#
# Each test server uses a key prefix of its own (TestServer::start), so tests run in parallel
# on the one Redis; nothing is flushed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

cluster=false
if [ "${1:-}" = --cluster ]; then
    cluster=true
    shift
fi

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    install_debian --no-install-recommends redis-server
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/memq-redis.XXXXXX")
pids=()
cleanup() {
    stop_all "${pids[@]}"
    rm -rf "$work"
}
trap cleanup EXIT

# start_redis PORT [redis-server args...]: a scratch Redis on loopback, no RDB snapshots, no
# AOF, leaving nothing behind; waits until it answers PING.
start_redis() {
    local port=$1
    shift
    mkdir -p "$work/$port"
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$work/$port" \
        --logfile "$work/$port/redis.log" --daemonize no "$@" &
    local pid=$!
    pids+=("$pid")
    for _ in $(seq 1 100); do
        if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$work/$port/redis.log" >&2 || true
            echo "redis-server exited at start" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "redis-server did not answer on 127.0.0.1:$port" >&2
    exit 1
}

version=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')
if $cluster; then
    ports=()
    for _ in 1 2 3; do
        port=$(free_port)
        start_redis "$port" --cluster-enabled yes --cluster-config-file nodes.conf \
            --cluster-node-timeout 2000
        ports+=("$port")
    done
    nodes=()
    urls=()
    for port in "${ports[@]}"; do
        nodes+=("127.0.0.1:$port")
        urls+=("redis://127.0.0.1:$port")
    done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$work/create.log" 2>&1 || {
        cat "$work/create.log" >&2
        echo "redis-cli --cluster create failed" >&2
        exit 1
    }
    for _ in $(seq 1 100); do
        ok=0
        for port in "${ports[@]}"; do
            redis-cli -h 127.0.0.1 -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' && ok=$((ok + 1))
        done
        [ "$ok" = 3 ] && break
        sleep 0.1
    done
    [ "$ok" = 3 ] || {
        echo "the Redis Cluster did not reach cluster_state:ok" >&2
        exit 1
    }
    MEMQ_TEST_REDIS=$(IFS=,; echo "${urls[*]}")
    export MEMQ_TEST_REDIS MEMQ_TEST_REDIS_CLUSTER=1
    echo "==> Redis Cluster ($version): three primaries on ${nodes[*]}"
else
    port=$(free_port)
    start_redis "$port"
    export MEMQ_TEST_REDIS="redis://127.0.0.1:$port/0"
    echo "==> redis-server $version on 127.0.0.1:$port"
fi

# Long-poll tests hold a thousand connections on each side of the loopback.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

profile=default
[ "${CI:-}" = "true" ] && profile=ci
if command -v cargo-nextest >/dev/null 2>&1; then
    # The durable-mode tests run on a data directory (the memory store) whatever is set, and the
    # real Kubernetes tests (tests/real_kube.rs) start queue-server processes of their own, so
    # by default both are left to scripts/test.sh's main run.
    if [ $# -eq 0 ]; then
        set -- -E 'not binary(durable) and not binary(real_kube)'
    fi
    cargo nextest run -p queue-server --locked --profile "$profile" --no-tests=fail "$@"
else
    cargo test -p queue-server --locked "$@"
fi
