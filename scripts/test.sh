#!/usr/bin/env bash
# Runs every check of the project: formatting, lints, all tests, manifests.
# Installs what the checks need by itself (idempotent); works with CI=true and no stdin.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

step() {
    local name=$1
    shift
    printf '\n==> %s\n' "$name"
    local started=$SECONDS
    if "$@"; then
        printf '==> %s: ok (%ss)\n' "$name" "$((SECONDS - started))"
    else
        local rc=$?
        printf '==> %s: FAILED (exit %s)\n' "$name" "$rc" >&2
        exit "$rc"
    fi
}

# Long-poll tests hold a thousand connections on each side of the loopback.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if ! command -v cargo-nextest >/dev/null 2>&1; then
    step "install cargo-nextest" cargo install --locked cargo-nextest
fi
# The consumer's tests run the shell and jq workers of docs/consumer.md.
if ! command -v jq >/dev/null 2>&1; then
    step "install jq" install_debian --no-install-recommends jq
fi
# The Redis partition test (tests/redis_partition.rs) makes network namespaces with `ip`.
if ! command -v ip >/dev/null 2>&1; then
    step "install iproute2" install_debian --no-install-recommends iproute2
fi
# The container image (scripts/image.sh and tests/image.rs): buildah builds it, mmdebstrap makes
# the stand-ins of its bases, podman runs it with runc and publishes its port with slirp4netns.
image_tools=()
for tool in buildah mmdebstrap podman runc slirp4netns; do
    command -v "$tool" >/dev/null 2>&1 || image_tools+=("$tool")
done
if [ ${#image_tools[@]} -gt 0 ]; then
    step "install ${image_tools[*]}" install_debian "${image_tools[@]}"
fi
for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
        step "install $component" rustup component add "$component"
    fi
done


profile=default
[ "${CI:-}" = "true" ] && profile=ci

step "format (cargo fmt --check)" cargo fmt --all --check
step "lint (cargo clippy -D warnings)" cargo clippy --workspace --all-targets --locked -- -D warnings
step "manifests and Dockerfile" scripts/check-manifests.sh
# The image users build from the Dockerfile, for tests/image.rs and the real node's pods (the
# first build compiles every crate inside it, about 10 minutes; later ones only the workspace's).
image_build() {
    local out
    out=$(scripts/image.sh) || return
    MEMQ_TEST_IMAGE=${out##*$'\n'}
    export MEMQ_TEST_IMAGE
    echo "MEMQ_TEST_IMAGE=$MEMQ_TEST_IMAGE"
}
step "container image (scripts/image.sh)" image_build
# A real Kubernetes control plane with its real node (kubelet, containerd, kube-proxy, CoreDNS;
# the memq-rs image just built imported) for the browser test, tests/real_kube.rs and
# tests/real_node.rs, in a state directory of its own (so a control plane someone runs by hand
# is left alone), stopped with its node when this script exits. The first run builds them from
# Go modules (about 10 minutes); later runs reuse the binaries. A node running for another
# control plane on this machine is waited for up to 15 minutes.
export MEMQ_KUBE_RUN=${MEMQ_TEST_KUBE_RUN:-$HOME/.cache/memq-rs/kube/test-run}
trap 'scripts/kube-down.sh >/dev/null 2>&1 || true' EXIT
kube_up() {
    local out
    # The binaries the test kubelet runs as pods' processes (consumer, producer).
    cargo build --workspace --bins --locked --quiet || return
    out=$(MEMQ_NODE_WAIT=${MEMQ_NODE_WAIT:-900} scripts/kube-up.sh --node) || return
    MEMQ_TEST_KUBECONFIG=${out##*export KUBECONFIG=}
    export MEMQ_TEST_KUBECONFIG
    echo "MEMQ_TEST_KUBECONFIG=$MEMQ_TEST_KUBECONFIG"
}
step "Kubernetes control plane and node (scripts/kube-up.sh --node) and the binaries the test kubelet runs" kube_up
step "dashboard in a real browser" scripts/browser-test.sh
step "tests on the Redis store" scripts/test-redis.sh
step "tests on a Redis Cluster" scripts/test-redis.sh --cluster
step "supply chain (cargo deny: licenses, bans, sources)" scripts/supply-chain.sh
step "metrics lint (promtool)" scripts/check-metrics.sh
step "API fuzzing (schemathesis from /openapi.json)" scripts/fuzz-api.sh
step "API description: lint, and the clients generated from it (Python, TypeScript)" scripts/check-openapi.sh
# Last, so that its summary closes the output.
# The multi-replica tests need the Redis that test-redis.sh starts: they ran there.
step "tests (cargo nextest)" cargo nextest run --workspace --locked --profile "$profile" --no-tests=fail \
    -E 'not binary(redis_replicas)'
printf '\nall checks passed\n'
