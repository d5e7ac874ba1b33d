#!/usr/bin/env bash
# Browser test of the dashboard: Debian's chromium, driven by playwright-core (npm), against the
# real queue-server binary on loopback. Installs chromium and playwright-core when missing
# (idempotent, no questions asked), builds the server, runs scripts/browser/dashboard.test.mjs,
# and on success copies the light screenshot to docs/dashboard.png.
# Screenshots: target/screenshots/. Closing line: "browser: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. scripts/lib.sh

[ -x /usr/bin/chromium ] || install_debian chromium
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    install_debian nodejs npm
fi
if [ ! -d scripts/browser/node_modules/playwright-core ]; then
    echo "==> installing playwright-core (npm ci)"
    (cd scripts/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "==> building queue-server"
cargo build -p queue-server --quiet
target_dir=${CARGO_TARGET_DIR:-$root/target}
case $target_dir in /*) ;; *) target_dir=$root/$target_dir ;; esac

# A private copy: a target dir shared with other work trees may be rebuilt under us mid-run.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$target_dir/debug/queue-server" "$work/queue-server"
export MEMQ_SERVER_BIN=$work/queue-server
export SCREENSHOT_DIR=$root/target/screenshots
mkdir -p "$SCREENSHOT_DIR"
echo "==> browser test (chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}'))"
# The suite bounds itself (170 s); this is the backstop if node itself hangs.
timeout 200 node scripts/browser/dashboard.test.mjs
cp "$SCREENSHOT_DIR/dashboard-light.png" docs/dashboard.png
