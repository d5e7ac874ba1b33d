#!/usr/bin/env bash
# Browser test of the dashboard: Debian's chromium, driven by playwright-core (npm), against the
# real queue-server binary on loopback. Installs chromium and playwright-core when missing
# (idempotent, no questions asked), builds the server and runs scripts/browser/dashboard.test.mjs.
# Screenshots: target/screenshots/ (the tree stays as it was). Closing line: "browser: N passed,
# N failed".
#   scripts/browser-test.sh                     the test
#   scripts/browser-test.sh --update-docs       the test, then docs/dashboard.png from its screenshot
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
run=${MEMQ_KUBE_RUN:-$HOME/.cache/memq-rs/kube/run}
started=
ns=
# At the end: the namespace, and the control plane if this script started it.
finish() {
    [ -z "$ns" ] || kube delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
    [ "$started" != control-plane ] || MEMQ_KUBE_RUN=$run scripts/kube-down.sh || true
    rm -rf "$work"
}
trap finish EXIT
cp "$target_dir/debug/queue-server" "$work/queue-server"
export MEMQ_SERVER_BIN=$work/queue-server

# The Jobs panel shows Jobs of a real Kubernetes API server: the control plane of
# scripts/kube-up.sh (test.sh starts it first; run alone, this reuses one it finds running and
# leaves it so, or starts one and stops it at its end), a namespace of its own with the base's
# RBAC, and a kubeconfig that holds only the queue server's ServiceAccount token. The Jobs stay
# active: their pods wait for a node, or for an image the node does not have.
if [ -z "${MEMQ_TEST_KUBECONFIG:-}" ]; then
    kube_running "$run" || started=control-plane
    MEMQ_TEST_KUBECONFIG=$(MEMQ_KUBE_RUN=$run scripts/kube-up.sh | tail -n1)
    MEMQ_TEST_KUBECONFIG=${MEMQ_TEST_KUBECONFIG#export KUBECONFIG=}
fi
kube() { "$(dirname "$MEMQ_TEST_KUBECONFIG")/kubectl" --kubeconfig "$MEMQ_TEST_KUBECONFIG" "$@"; }
ns=browser-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
echo "==> Kubernetes namespace $ns with the queue server's RBAC"
kube create namespace "$ns" >/dev/null
kube apply --server-side -n "$ns" -f manifests/base/serviceaccount.yaml \
    -f manifests/base/role.yaml -f manifests/base/rolebinding.yaml >/dev/null
scripts/kube-sa-kubeconfig.sh "$MEMQ_TEST_KUBECONFIG" "$ns" queue-server "$work/queue-server.kubeconfig"
export MEMQ_JOBS_KUBECONFIG=$work/queue-server.kubeconfig MEMQ_JOBS_NAMESPACE=$ns
export SCREENSHOT_DIR=$root/target/screenshots
mkdir -p "$SCREENSHOT_DIR"
echo "==> browser test (chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}'))"
# The suite bounds itself (170 s); this is the backstop if node itself hangs.
timeout 200 node scripts/browser/dashboard.test.mjs
if [ "${1:-}" = --update-docs ]; then
    cp "$SCREENSHOT_DIR/dashboard-light.png" docs/dashboard.png
    echo "==> docs/dashboard.png updated from $SCREENSHOT_DIR/dashboard-light.png"
fi
