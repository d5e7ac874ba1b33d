#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ (libFuzzer, AddressSanitizer) for a while each.
#   scripts/fuzz.sh                  every target, 60 s each
#   scripts/fuzz.sh TARGET [SECONDS] one target
# cargo-fuzz passes nightly-only flags (-Zsanitizer, -Cpasses=sancov); RUSTC_BOOTSTRAP=1 lets
# the stable toolchain take them. Installs cargo-fuzz when missing (idempotent). A crash stops
# the run and leaves its input in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz (once)"
    cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1
# Its own build directory: sanitizer builds share nothing with the normal ones.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/fuzz/target}"

targets=(batch_body brace_expand journal_frames segment_header)
seconds=60
if [ $# -ge 1 ]; then
    targets=("$1")
    seconds="${2:-60}"
fi
for target in "${targets[@]}"; do
    printf '\n==> fuzz %s for %ss\n' "$target" "$seconds"
    cargo fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=4096
done
