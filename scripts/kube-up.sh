#!/usr/bin/env bash
# Starts a real Kubernetes control plane on 127.0.0.1, without a cluster or a container engine:
# etcd, kube-apiserver (RBAC, service-account tokens, the default admission plugins),
# kube-controller-manager (Jobs, ServiceAccounts and their tokens, garbage collection, TTL of
# finished Jobs, namespaces, ReplicaSets, Deployments, StatefulSets, nodes, EndpointSlices,
# PersistentVolume binding, the root CA ConfigMap) and kube-scheduler.
#   scripts/kube-up.sh            the control plane alone: no node runs pods unless a test
#                                 registers one of its own (queue-server/tests/kube_cluster/)
#   scripts/kube-up.sh --node     and one real node: kubelet, containerd, kube-proxy, CoreDNS
#                                 (scripts/node-up.sh; needs root)
# Its Service range is 198.19.0.0/24, in the test-network range, as the node's addresses are.
#
# Builds the binaries from Go modules the first time (scripts/kube/go.mod pins the release) into
# $MEMQ_KUBE_CACHE (default ~/.cache/memq-rs/kube/<version>), then reuses them.
# Idempotent: while a control plane started by this script runs, a second call reuses it.
# The LAST line printed is `export KUBECONFIG=<admin kubeconfig>`, so that
#   eval "$(scripts/kube-up.sh | tail -n1)"
# points kubectl at it. scripts/kube-down.sh stops it.
#
# It also builds kubectl of the same release and links it as kubectl beside the kubeconfig
# (and, with --node, the kubelet and kube-proxy).
# Environment: MEMQ_KUBE_CACHE (binaries), MEMQ_KUBE_RUN (certificates, etcd data, logs, PIDs;
# default ~/.cache/memq-rs/kube/run). Needs go, openssl, python3.
set -euo pipefail

NODE=0
case "${1:-}" in
    "") ;;
    --node) NODE=1 ;;
    *) echo "usage: $0 [--node]" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
MODULE=$ROOT/scripts/kube
VERSION=$(sed -n 's#^require k8s.io/kubernetes \(v[0-9.]*\)$#\1#p' "$MODULE/go.mod")
[ -n "$VERSION" ] || { echo "ERROR cannot read the k8s.io/kubernetes version from $MODULE/go.mod" >&2; exit 1; }
CACHE=${MEMQ_KUBE_CACHE:-$HOME/.cache/memq-rs/kube/$VERSION}
BIN=$CACHE/bin
RUN=${MEMQ_KUBE_RUN:-$HOME/.cache/memq-rs/kube/run}
ETCD_VERSION=$(sed -n 's#^\s*go.etcd.io/etcd/server/v3 \(v[0-9.]*\).*#\1#p' "$MODULE/go.mod")
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler)

say() { printf '[kube-up] %s\n' "$*" >&2; }
die() { printf '[kube-up] ERROR %s\n' "$*" >&2; exit 1; }

for tool in go openssl python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found on PATH; install it and run this script again"
done
# A machine that cannot run the node is told so before anything is built or started.
[ "$NODE" = 0 ] || "$ROOT/scripts/node-up.sh" --check

mkdir -p "$RUN"
# One kube-up at a time: tests started in parallel may all call it.
exec 9>"$RUN/.lock"
flock 9

# ---- build ---------------------------------------------------------------------------------
# One build at a time into the shared cache, whatever state directory each caller uses.
mkdir -p "$CACHE"
exec 8>"$CACHE/.build-lock"
flock 8
build() {
    local name=$1 package=$2 started=$SECONDS version=$VERSION
    [ "$name" != etcd ] || version=$ETCD_VERSION
    say "building $name $version from Go modules (first time only: about 4 minutes for all on 2 cores)"
    local ldflags="-s -w"
    if [ "$name" != etcd ]; then
        local minor=${VERSION#v1.}
        minor=${minor%%.*}
        ldflags+=" -X k8s.io/component-base/version.gitVersion=$VERSION"
        ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
        ldflags+=" -X k8s.io/component-base/version.gitMinor=$minor"
        ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
    fi
    (cd "$MODULE" && go build -trimpath -ldflags "$ldflags" -o "$BIN/$name.tmp" "$package") ||
        die "building $name failed (above); check that the Go module proxy is reachable (go env GOPROXY) and run this script again"
    mv "$BIN/$name.tmp" "$BIN/$name"
    say "built $name in $((SECONDS - started))s -> $BIN/$name"
}

mkdir -p "$BIN"
declare -A PACKAGE=(
    [etcd]=go.etcd.io/etcd/server/v3
    [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
    [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
    [kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
    [kubectl]=k8s.io/kubernetes/cmd/kubectl
    [kubelet]=k8s.io/kubernetes/cmd/kubelet
    [kube-proxy]=k8s.io/kubernetes/cmd/kube-proxy
)
build_started=$SECONDS
built=0
# kubectl of the same release, so that the tests' client is never out of the supported skew.
NODE_COMPONENTS=()
[ "$NODE" = 0 ] || NODE_COMPONENTS=(kubelet kube-proxy)
for name in "${COMPONENTS[@]}" kubectl "${NODE_COMPONENTS[@]}"; do
    if [ ! -x "$BIN/$name" ]; then
        build "$name" "${PACKAGE[$name]}"
        built=1
    fi
done
[ "$built" = 0 ] || say "control plane binaries built in $((SECONDS - build_started))s"
exec 8>&- # releases the build lock; the daemons started below must not hold it

# ---- reuse a running one -------------------------------------------------------------------
KUBECONFIG_ADMIN=$RUN/admin.kubeconfig
KUBECTL=$BIN/kubectl

# alive NAME: the process recorded for NAME runs, and is that binary.
alive() {
    runs_binary "$(cat "$RUN/$1.pid" 2>/dev/null)" "$BIN/$1"
}

ready() {
    "$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN" get --raw /readyz --request-timeout=5s >/dev/null 2>&1
}

# finish: the node too if asked (while the lock is held: one start at a time), then the export
# line, last; exits.
finish() {
    if [ "$NODE" = 1 ]; then
        MEMQ_KUBE_RUN=$RUN MEMQ_KUBE_BIN=$BIN "$ROOT/scripts/node-up.sh" ||
            die "the node did not start (why: above); the control plane runs on without it"
    fi
    echo "export KUBECONFIG=$KUBECONFIG_ADMIN"
    exit 0
}

all_alive=1
for name in "${COMPONENTS[@]}"; do alive "$name" || all_alive=0; done
if [ "$all_alive" = 1 ]; then
    # Running: give a busy API server a minute to answer rather than start it again under the
    # tests that use it.
    until_ready=$((SECONDS + 60))
    while [ "$SECONDS" -lt "$until_ready" ]; do
        if ready; then
            say "control plane already running ($RUN); reusing it"
            finish
        fi
        sleep 0.5
    done
    say "the recorded control plane runs but its API server did not answer for 60s"
fi
if [ -n "$(ls "$RUN"/*.pid 2>/dev/null)" ]; then
    say "a partial or stopped control plane is recorded in $RUN; stopping what is left of it"
    MEMQ_KUBE_RUN=$RUN "$ROOT/scripts/kube-down.sh" --locked >&2
fi

up_started=$SECONDS
# Fresh state every start: certificates, etcd data, logs.
kube_clear "$RUN"
PKI=$RUN/pki
mkdir -p "$PKI" "$RUN/logs"
ln -s "$KUBECTL" "$RUN/kubectl"
# Where the binaries are, so that kube-down.sh signals only processes running them.
echo "$BIN" >"$RUN/bin"
# Until the end: a start that fails stops what it started, keeping the logs.
up_done=0
stop_failed_start() {
    [ "$up_done" = 0 ] || return 0
    rm -rf "$RUN/failed-logs"
    mv "$RUN/logs" "$RUN/failed-logs" 2>/dev/null || true
    MEMQ_KUBE_RUN=$RUN "$ROOT/scripts/kube-down.sh" --locked >&2 || true
    say "stopped what this start began; its logs are in $RUN/failed-logs"
}
trap stop_failed_start EXIT

# ---- certificates --------------------------------------------------------------------------
say "generating certificates in $PKI"
openssl_quiet() { openssl "$@" 2>/dev/null; }
openssl_quiet req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=memq-kube-ca" \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt"
cert() { kube_cert "$PKI" "$PKI" "$@"; }
node_settings
# Also the addresses the node and its pods reach it at (scripts/node-up.sh).
cert apiserver "/CN=kube-apiserver" \
    "IP:127.0.0.1,IP:$NODE_KUBERNETES_IP,IP:$NODE_HOST_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert admin "/O=system:masters/CN=memq-admin"
cert controller-manager "/CN=system:kube-controller-manager"
cert scheduler "/CN=system:kube-scheduler"
# The API server's identity towards kubelets (logs, exec, port-forward).
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
# The key pair that signs and checks ServiceAccount tokens.
openssl_quiet genrsa -out "$PKI/sa.key" 2048
openssl_quiet rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"

# ---- ports ---------------------------------------------------------------------------------
ETCD_PORT=$(free_port)
ETCD_PEER_PORT=$((ETCD_PORT + 10000))
API_PORT=$(free_port)
echo "$API_PORT" >"$RUN/apiserver.port"
API=https://127.0.0.1:$API_PORT

kubeconfig() { kube_kubeconfig "$1" "$API" "$PKI/ca.crt" "$PKI/$2"; }
kubeconfig "$KUBECONFIG_ADMIN" admin
kubeconfig "$RUN/controller-manager.kubeconfig" controller-manager
kubeconfig "$RUN/scheduler.kubeconfig" scheduler

# ---- start ---------------------------------------------------------------------------------
# start NAME ARGS...: runs $BIN/NAME in its own session, logs to logs/NAME.log, records its PID.
start() {
    local name=$1
    shift
    # 9>&-: the daemons must not inherit (and so hold) the lock.
    setsid "$BIN/$name" "$@" </dev/null >"$RUN/logs/$name.log" 2>&1 9>&- &
    echo $! >"$RUN/$name.pid"
}

# wait_for NAME SECONDS COMMAND...: polls COMMAND until it succeeds while process NAME runs;
# fails with the end of NAME's log when NAME exits or the time is up.
wait_for() {
    local name=$1 limit=$2
    shift 2
    local log=$RUN/logs/$name.log deadline=$((SECONDS + limit)) why=""
    until "$@" >/dev/null 2>&1; do
        if ! alive "$name"; then
            why="exited"
        elif [ "$SECONDS" -ge "$deadline" ]; then
            why="was not ready within ${limit}s"
        fi
        if [ -n "$why" ]; then
            say "$name $why; the end of its log:"
            tail -n 30 "$log" >&2 || true
            die "$name did not start (its log is kept in $RUN/failed-logs); fix what it says and run this script again"
        fi
        sleep 0.2
    done
}

say "starting etcd on 127.0.0.1:$ETCD_PORT"
start etcd \
    --name=memq-kube \
    --data-dir="$RUN/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="memq-kube=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync \
    --quota-backend-bytes=$((1024 * 1024 * 1024)) \
    --log-level=warn
etcd_health() { python3 -c "import urllib.request,sys; sys.exit(0 if b'true' in urllib.request.urlopen('http://127.0.0.1:$ETCD_PORT/health', timeout=2).read() else 1)"; }
wait_for etcd 30 etcd_health

say "starting kube-apiserver on $API"
start kube-apiserver \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$API_PORT" \
    --tls-cert-file="$PKI/apiserver.crt" \
    --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --api-audiences=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range="$NODE_SERVICE_CIDR" \
    --endpoint-reconciler-type=none \
    --allow-privileged=true \
    --enable-admission-plugins=PodNodeSelector,PodTolerationRestriction \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" \
    --kubelet-preferred-address-types=InternalIP \
    --profiling=false \
    --v=1
wait_for kube-apiserver 90 ready

say "starting kube-controller-manager and kube-scheduler"
start kube-controller-manager \
    --kubeconfig="$RUN/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$RUN/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$RUN/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port=0 \
    --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" \
    --root-ca-file="$PKI/ca.crt" \
    --controllers=job-controller,serviceaccount-controller,serviceaccount-token-controller,garbage-collector-controller,ttl-after-finished-controller,namespace-controller,replicaset-controller,deployment-controller,statefulset-controller,node-lifecycle-controller,endpointslice-controller,persistentvolume-binder-controller,pod-garbage-collector-controller,root-ca-certificate-publisher-controller \
    --concurrent-job-syncs=5 \
    --v=1
start kube-scheduler \
    --kubeconfig="$RUN/scheduler.kubeconfig" \
    --authentication-kubeconfig="$RUN/scheduler.kubeconfig" \
    --authorization-kubeconfig="$RUN/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port=0 \
    --leader-elect=false \
    --v=1

# Ready when the controllers work: the ServiceAccount controller has made "default" in the
# default namespace (pods cannot be created in a namespace before it has one).
sa_ready() {
    alive kube-controller-manager && alive kube-scheduler &&
        "$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN" -n default get serviceaccount default
}
wait_for kube-controller-manager 60 sa_ready
for name in "${COMPONENTS[@]}"; do
    alive "$name" || die "$name exited at start; see $RUN/logs/$name.log"
done

up_done=1
say "control plane ready in $((SECONDS - up_started))s: API server $API, logs in $RUN/logs; stop it with scripts/kube-down.sh"
finish
