#!/usr/bin/env bash
# Runs the queue server's black-box suite against the Redis store, plus the multi-replica tests
# (tests/redis_replicas.rs): installs redis-server from Debian when missing, starts a private
# one on a free loopback port without persistence (`cargo xtask redis`, see lib.sh), runs the
# tests with MEMQ_TEST_REDIS pointing at it, and stops it on exit. Idempotent, reads no stdin,
# asks nothing (CI=true included).
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

trap stop_redis EXIT
version=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')
if $cluster; then
    start_redis --cluster 3
    export MEMQ_TEST_REDIS=$REDIS_URL MEMQ_TEST_REDIS_CLUSTER=1
    echo "==> Redis Cluster ($version): three primaries, $REDIS_URL"
else
    start_redis
    export MEMQ_TEST_REDIS=$REDIS_URL
    echo "==> redis-server $version on $REDIS_URL"
fi

# The previous release's server, for the rolling-upgrade test (tests/redis_replicas.rs): built
# from this repository's history once, then taken from ~/.cache/memq-rs/releases.
MEMQ_TEST_PREVIOUS_SERVER=$(scripts/previous-release.sh)
export MEMQ_TEST_PREVIOUS_SERVER
echo "==> previous release: $MEMQ_TEST_PREVIOUS_SERVER"

# Long-poll tests hold a thousand connections on each side of the loopback.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

profile=default
[ "${CI:-}" = "true" ] && profile=ci
if command -v cargo-nextest >/dev/null 2>&1; then
    # The durable-mode tests run on a data directory (the memory store) whatever is set, the
    # real Kubernetes tests (tests/real_kube.rs) start queue-server processes of their own, and
    # the store rules, partition and coalescing tests (tests/store_rules.rs, redis_partition.rs,
    # redis_coalesce.rs) start the Redis they need, and the Prometheus scrape
    # (tests/prometheus.rs) runs on the memory store, so by default these are left to
    # scripts/test.sh's main run.
    if [ $# -eq 0 ]; then
        set -- -E 'not binary(durable) and not binary(real_kube) and not binary(store_rules) and not binary(redis_partition) and not binary(redis_coalesce) and not binary(prometheus)'
    fi
    cargo nextest run -p queue-server --locked --profile "$profile" --no-tests=fail "$@"
else
    cargo test -p queue-server --locked "$@"
fi
