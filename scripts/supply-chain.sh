#!/usr/bin/env bash
# Supply chain: licenses, banned and duplicate crates, and crate sources, by cargo-deny with
# deny.toml. Installs cargo-deny when missing (idempotent); works with CI=true and no stdin.
#
# Advisories (`cargo deny check advisories`) need the RustSec database, which cargo-deny
# fetches from GitHub: that is not reachable from the build machines, so this script skips
# them. Run `scripts/supply-chain.sh --advisories` where GitHub is reachable.
set -euo pipefail
cd "$(dirname "$0")/.."

checks=(licenses bans sources)
if [ "${1:-}" = "--advisories" ]; then
    checks+=(advisories)
fi

if ! command -v cargo-deny >/dev/null 2>&1; then
    echo "installing cargo-deny (once)"
    cargo install --locked cargo-deny
fi

# Crate metadata comes from crates.io (reachable); --locked: Cargo.lock is the truth.
exec cargo deny --locked check --show-stats "${checks[@]}"
