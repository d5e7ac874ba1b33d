#!/usr/bin/env bash
# The HTTP benchmark suite: queue-server against a bare axum server answering 204 (the limit of
# the HTTP stack on this machine, queue-server/examples/baseline.rs), driven by the same load
# generator (wrk, one thread) at the same concurrency, back to back in the same run. Every figure
# is printed with its ratio to that baseline, because on a shared machine only ratios from one
# run mean something; the Redis store's figures (section redis, on a redis-server of its own,
# Debian's, installed when missing) with their ratio to the memory store; section drain has five
# consumers drain 1,000,000 items beside beanstalkd (Debian's), NATS JetStream and a Redis list
# in the same run (their clients and nats-server built from scripts/drain with Go into
# ~/.cache/memq-rs/drain; BENCH_DRAIN_ITEMS=100000 for a quicker run). Loopback only; eight to
# ten minutes (the drain section five or six of them); every process it starts is stopped on
# exit. The table goes to stdout and to
# $CARGO_TARGET_DIR/bench/latest.txt (default target/bench/latest.txt); wrk's raw output to
# .../bench/raw/.
#
#   scripts/bench.sh                    # build --release, run everything
#   scripts/bench.sh enqueue lease_ack  # only these sections (names: xtask/src/bench.rs, SECTIONS)
#   BENCH_SECONDS=2 BENCH_ROUNDS=1 scripts/bench.sh  # shorter: 1 round of 2 s per side
# Each figure alternates baseline and server runs (BENCH_ROUNDS rounds of BENCH_SECONDS each,
# default 2 x 3 s) and reports the means, so that a burst of load from elsewhere on the machine
# weighs on both sides alike. This script installs wrk (and redis-server), builds, and hands
# over to `cargo xtask bench` (xtask/src/bench.rs), which starts the servers, runs wrk and
# prints the table.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
# The load average before the build, for the table's header.
BENCH_LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
export BENCH_LOADAVG

# 10,000 idle long polls need 10,000 sockets on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 10100 ]; then
    echo "bench: need at least 10100 open files (ulimit -n), have $(ulimit -n)" >&2
    exit 1
fi

# Whether section $1 runs (every section does when none is named).
runs_section() { [ "$ARGS" = "  " ] || [[ "$ARGS" == *" $1 "* ]]; }
ARGS=" $* "

command -v wrk >/dev/null 2>&1 || install_debian wrk
if runs_section redis || runs_section drain; then
    command -v redis-server >/dev/null 2>&1 || install_debian redis-server
fi
if runs_section drain; then
    command -v beanstalkd >/dev/null 2>&1 || install_debian beanstalkd
    command -v python3 >/dev/null 2>&1 || install_debian python3
    # The drain section's peers: drainpeer (scripts/drain, their clients) and nats-server, built
    # from Go modules into the cache again only when scripts/drain changed.
    DRAIN_TOOLS=$HOME/.cache/memq-rs/drain
    export DRAIN_TOOLS
    stamp=$(cat scripts/drain/go.mod scripts/drain/go.sum scripts/drain/main.go | sha256sum | cut -c1-16)
    if [ "$(cat "$DRAIN_TOOLS/stamp" 2>/dev/null)" != "$stamp" ]; then
        command -v go >/dev/null 2>&1 || {
            echo "bench: the drain section builds its peers with Go (the release scripts/drain/go.mod names, or later); install it (https://go.dev/dl/) or leave the section out" >&2
            exit 1
        }
        mkdir -p "$DRAIN_TOOLS"
        echo "  .. building drainpeer and nats-server from Go modules (first time only: about a minute)" >&2
        for tool in drainpeer:. nats-server:github.com/nats-io/nats-server/v2; do
            (cd scripts/drain && go build -trimpath -o "$DRAIN_TOOLS/${tool%%:*}.tmp" "${tool#*:}") || {
                echo "bench: building ${tool%%:*} failed (above); check that the Go module proxy is reachable (go env GOPROXY) and run again" >&2
                exit 1
            }
            mv "$DRAIN_TOOLS/${tool%%:*}.tmp" "$DRAIN_TOOLS/${tool%%:*}"
        done
        echo "$stamp" >"$DRAIN_TOOLS/stamp"
    fi
fi

echo "  .. building (release)" >&2
cargo build --release --quiet -p queue-server -p producer -p consumer --bins
cargo build --release --quiet -p queue-server --example baseline
cargo build --quiet --locked -p xtask
exec "${CARGO_TARGET_DIR:-target}/debug/xtask" bench "$@"
