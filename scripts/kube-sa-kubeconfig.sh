#!/usr/bin/env bash
# Writes a kubeconfig that authenticates with nothing but a token of one ServiceAccount, as a
# pod running under it would: for running queue-server outside a cluster with exactly the
# rights its Role gives (the browser test, tests/real_kube.rs, by hand).
#   scripts/kube-sa-kubeconfig.sh ADMIN_KUBECONFIG NAMESPACE ACCOUNT OUT
# The token comes from `kubectl create token` (2 hours). kubectl: the one scripts/kube-up.sh
# built beside ADMIN_KUBECONFIG, else the one on PATH.
set -euo pipefail

[ $# -eq 4 ] || { echo "usage: $0 ADMIN_KUBECONFIG NAMESPACE ACCOUNT OUT" >&2; exit 2; }
admin=$1 ns=$2 account=$3 out=$4
kubectl=$(dirname "$admin")/kubectl
[ -x "$kubectl" ] || kubectl=kubectl
kube() { "$kubectl" --kubeconfig "$admin" "$@"; }

# Each value first, so that a failure stops here instead of writing an empty field.
api=$(kube config view --raw -o jsonpath='{.clusters[0].cluster.server}')
ca=$(kube config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
token=$(kube -n "$ns" create token "$account" --duration=2h)
cat >"$out" <<YAML
apiVersion: v1
kind: Config
clusters:
  - name: memq-kube
    cluster:
      server: $api
      certificate-authority-data: $ca
users:
  - name: $account
    user:
      token: $token
contexts:
  - name: memq-kube
    context: {cluster: memq-kube, user: $account, namespace: $ns}
current-context: memq-kube
YAML
