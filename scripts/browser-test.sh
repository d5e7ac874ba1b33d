#!/usr/bin/env bash
# Browser test of the dashboard: Debian's chromium, driven by playwright-core (npm), against the
# real queue-server binary on loopback. Installs chromium and playwright-core when missing
# (idempotent, no questions asked), builds the server and runs scripts/browser/dashboard.test.mjs.
# Then scripts/browser/node.test.mjs against the walkthrough running in containers on the real
# node of `scripts/kube-up.sh --node`, through `kubectl port-forward svc/queue`.
# Screenshots: target/screenshots/ (the tree stays as it was). Closing lines: "browser: N passed,
# N failed", "browser on the node: N passed, N failed".
#   scripts/browser-test.sh                     the test
#   scripts/browser-test.sh --update-docs       the test, then docs/dashboard.png and
#                                               docs/dashboard-node.png from its screenshots
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
node_ns=
forward_pid=
# At the end: the port-forward, the namespaces, and what this script started.
finish() {
    [ -z "$forward_pid" ] || stop_all "$forward_pid"
    for namespace in $ns $node_ns; do
        kube delete namespace "$namespace" --wait=false >/dev/null 2>&1 || true
    done
    case $started in
        control-plane) MEMQ_KUBE_RUN=$run scripts/kube-down.sh || true ;;
        node) scripts/node-down.sh || true ;;
    esac
    rm -rf "$work"
}
trap finish EXIT
cp "$target_dir/debug/queue-server" "$work/queue-server"
export MEMQ_SERVER_BIN=$work/queue-server

# Kubernetes: the control plane of scripts/kube-up.sh with its real node (test.sh starts them
# first). Run alone, this starts what does not run yet and stops at its end exactly that,
# leaving alone a control plane or node it found running.
if [ -z "${MEMQ_TEST_KUBECONFIG:-}" ]; then
    if ! kube_running "$run"; then
        started=control-plane
    elif ! node_running "$run"; then
        started=node
    fi
    MEMQ_TEST_KUBECONFIG=$(MEMQ_KUBE_RUN=$run scripts/kube-up.sh --node | tail -n1)
    MEMQ_TEST_KUBECONFIG=${MEMQ_TEST_KUBECONFIG#export KUBECONFIG=}
fi
kubectl=$(dirname "$MEMQ_TEST_KUBECONFIG")/kubectl
kube() { "$kubectl" --kubeconfig "$MEMQ_TEST_KUBECONFIG" "$@"; }
if [ "$(kube get node memq-node -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" != True ]; then
    echo "no Ready node memq-node on the control plane of $MEMQ_TEST_KUBECONFIG: start it with scripts/kube-up.sh --node" >&2
    exit 1
fi

# The main suite's server runs here, its Jobs panel on a namespace of its own with the base's
# RBAC, through a kubeconfig that holds only the queue server's ServiceAccount token.
ns=browser-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
echo "==> Kubernetes namespace $ns with the queue server's RBAC"
kube create namespace "$ns" >/dev/null
kube apply --server-side -n "$ns" -f manifests/base/serviceaccount.yaml \
    -f manifests/base/role.yaml -f manifests/base/rolebinding.yaml >/dev/null
scripts/kube-sa-kubeconfig.sh "$MEMQ_TEST_KUBECONFIG" "$ns" queue-server "$work/queue-server.kubeconfig"
export MEMQ_JOBS_KUBECONFIG=$work/queue-server.kubeconfig MEMQ_JOBS_NAMESPACE=$ns

# The walkthrough in containers on the node, its dashboard through a port-forward.
node_ns=$ns-node
echo "==> the walkthrough on the node in namespace $node_ns (make-tokens.sh, apply -k manifests/base)"
kube create namespace "$node_ns" >/dev/null
KUBECONFIG=$MEMQ_TEST_KUBECONFIG KUBECTL=$kubectl scripts/make-tokens.sh --namespace "$node_ns" >/dev/null
kube apply --server-side -n "$node_ns" -k manifests/base >/dev/null
kube -n "$node_ns" wait --for=condition=Ready pod -l app=work-queue,component=queue --timeout=180s >/dev/null
forward_port=$(free_port)
kube -n "$node_ns" port-forward svc/queue "$forward_port:8080" >"$work/port-forward.log" 2>&1 &
forward_pid=$!
for _ in $(seq 100); do
    grep -q '^Forwarding from' "$work/port-forward.log" && break
    kill -0 "$forward_pid" 2>/dev/null || break
    sleep 0.2
done
grep -q '^Forwarding from' "$work/port-forward.log" || {
    cat "$work/port-forward.log" >&2
    echo "kubectl port-forward svc/queue did not start (above)" >&2
    exit 1
}
export SCREENSHOT_DIR=$root/target/screenshots
mkdir -p "$SCREENSHOT_DIR"
echo "==> browser test (chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}'))"
# The suite bounds itself (170 s); this is the backstop if node itself hangs.
timeout 200 node scripts/browser/dashboard.test.mjs
echo "==> browser test of the dashboard on the node, through kubectl port-forward svc/queue"
MEMQ_NODE_URL=http://127.0.0.1:$forward_port \
    MEMQ_NODE_TOKEN=$(kube -n "$node_ns" get secret memq-token-admin -o 'jsonpath={.data.token}' | base64 -d) \
    MEMQ_NODE_NAMESPACE=$node_ns KUBECTL=$kubectl KUBECONFIG=$MEMQ_TEST_KUBECONFIG \
    timeout 330 node scripts/browser/node.test.mjs
if [ "${1:-}" = --update-docs ]; then
    cp "$SCREENSHOT_DIR/dashboard-light.png" docs/dashboard.png
    cp "$SCREENSHOT_DIR/dashboard-node.png" docs/dashboard-node.png
    echo "==> docs/dashboard.png and docs/dashboard-node.png updated from $SCREENSHOT_DIR"
fi
