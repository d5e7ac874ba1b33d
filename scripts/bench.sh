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

command -v wrk >/dev/null 2>&1 || install_debian wrk
if [ $# = 0 ] || [[ " $* " == *" redis "* ]]; then
    command -v redis-server >/dev/null 2>&1 || install_debian redis-server
fi

echo "  .. building (release)" >&2
cargo build --release --quiet -p queue-server -p producer -p consumer --bins
cargo build --release --quiet -p queue-server --example baseline
cargo build --quiet --locked -p xtask
exec "${CARGO_TARGET_DIR:-target}/debug/xtask" bench "$@"
