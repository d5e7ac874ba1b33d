#!/usr/bin/env bash
# Builds the queue-server of the previous release (0.1.0: commit 692fa61, the code whose data
# tests/golden/*-v1 hold) from this repository's history, once, into
# $MEMQ_RELEASES_CACHE/0.1.0/queue-server (default ~/.cache/memq-rs/releases), and prints the
# binary's path on stdout; later runs print it at once. The rolling-upgrade test
# (tests/redis_replicas.rs) runs it beside today's server on one Redis. The first build
# compiles every dependency in a target directory of its own (a few minutes; cargo shows its
# progress on stderr), which is removed afterwards. Needs the commit in this clone: a shallow
# clone fails with what to fetch. Reads no stdin (CI=true included).
set -euo pipefail
cd "$(dirname "$0")/.."

release=0.1.0
commit=692fa614b610e924c8eed102a19e2b5115f233b3
out=${MEMQ_RELEASES_CACHE:-$HOME/.cache/memq-rs/releases}/$release
bin=$out/queue-server

if [ -x "$bin" ]; then
    echo "$bin"
    exit 0
fi
if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
    echo "previous-release: commit $commit (queue-server $release) is not in this clone;" \
        "fetch the history (git fetch --unshallow origin) and run again" >&2
    exit 1
fi
echo "==> building queue-server $release ($commit) into $out (once)" >&2
rm -rf "$out/src" "$out/target"
mkdir -p "$out/src"
git archive "$commit" | tar -x -C "$out/src"
CARGO_TARGET_DIR=$out/target cargo build --locked --manifest-path "$out/src/Cargo.toml" \
    -p queue-server --bin queue-server >&2
cp "$out/target/debug/queue-server" "$bin.tmp"
mv "$bin.tmp" "$bin"
rm -rf "$out/src" "$out/target"
echo "$bin"
