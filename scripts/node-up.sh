#!/usr/bin/env bash
# Adds one real node to the control plane of scripts/kube-up.sh (which calls this for
# `scripts/kube-up.sh --node`): containerd 2.1 with Debian's runc, a locally made pause image as
# its sandbox image and the CNI plugins of Debian (bridge, host-local, loopback, portmap); the
# kubelet and kube-proxy (iptables mode) of the pinned release; CoreDNS for cluster.local; and
# the memq-rs image of scripts/image.sh imported into the runtime, so that pods never pull.
#
# Everything of the node is memq's and undone by scripts/node-down.sh (kube-down.sh calls it):
# - a network namespace memq-node, where containerd, the kubelet, kube-proxy and the pods'
#   bridge memq-br0 live, so that kube-proxy's and the CNI plugins' iptables rules and the
#   pods' interfaces stay in it; a veth pair memq-host (host, 198.19.255.254) / memq-node0
#   (the node's address, 198.19.255.1);
# - pods in 198.18.0.0/24 with a route to 198.18.0.0/15 only (no default route, no
#   masquerading: nothing leaves the machine), Services in 198.19.0.0/24; the host routes both
#   ranges to the node;
# - the host's nftables table memq_node, which forwards 198.19.255.254:6443 to the API server's
#   loopback port (route_localnet on memq-host only): how the node and its pods reach it;
# - CoreDNS on 198.19.255.254:53 in the host's namespace, serving cluster.local and its reverse
#   zones from the API, NXDOMAIN for any other name (it has no plugin that forwards);
# - /var/lib/memq-node (kubelet, containerd, CNI, logs), /run/memq-node (runtime state,
#   socket, pods' network namespaces), the cgroup memq-node in each hierarchy, and the kernel
#   settings the kubelet changes (restored by node-down.sh).
# One node per machine: a node running for another live control plane is waited for
# (MEMQ_NODE_WAIT seconds, default 0) and then refused.
#   scripts/node-up.sh            start (or reuse) the node of $MEMQ_KUBE_RUN's control plane
#   scripts/node-up.sh --check    only whether this machine can run it: one line and exit 1 if not
# Needs root. Installs its Debian packages (runc, containernetworking-plugins, iptables,
# conntrack, nftables, buildah, mmdebstrap) when missing; builds what scripts/node-build.sh builds.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
node_settings

say() { printf '[node-up] %s\n' "$*" >&2; }
die() { printf '[node-up] ERROR %s\n' "$*" >&2; exit 1; }

# ---- prerequisites -------------------------------------------------------------------------
# What no install can fix: one line naming it.
check() {
    [ "$(id -u)" = 0 ] ||
        die "a node needs root (network namespace, bridge, mounts, cgroups); run it as root"
    grep -qw overlay /proc/filesystems ||
        die "the kernel has no overlay filesystem (containerd's snapshotter needs it)"
    [ -e /sys/fs/cgroup/memory ] || [ -e /sys/fs/cgroup/cgroup.controllers ] ||
        die "no cgroup hierarchy with the memory controller under /sys/fs/cgroup"
    [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] ||
        die "the kernel has no br_netfilter (kube-proxy needs bridged traffic to pass iptables)"
    command -v go >/dev/null 2>&1 || die "go not found on PATH (the node is built from Go modules); install Go 1.24 or newer"
}
check
[ "${1:-}" != --check ] || exit 0

PACKAGES=(runc containernetworking-plugins iptables conntrack nftables buildah mmdebstrap gcc libc6-dev iproute2 util-linux)
missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || missing+=("$package")
done
[ "${#missing[@]}" = 0 ] || install_debian --no-install-recommends "${missing[@]}"

RUN=${MEMQ_KUBE_RUN:-$HOME/.cache/memq-rs/kube/run}
BIN=${MEMQ_KUBE_BIN:-$(cat "$RUN/bin" 2>/dev/null || true)}
KUBECTL=$BIN/kubectl
ADMIN=$RUN/admin.kubeconfig
for name in kubelet kube-proxy kubectl; do
    [ -x "$BIN/$name" ] || die "$BIN/$name is missing: start the node with scripts/kube-up.sh --node"
done
[ -f "$ADMIN" ] && [ -f "$RUN/apiserver.port" ] ||
    die "no control plane in $RUN: start the node with scripts/kube-up.sh --node"
"$ROOT/scripts/node-build.sh"
CONTAINERD_BIN=$NODE_CACHE/containerd-$CONTAINERD_VERSION/bin
# The image the manifests name (memq-rs:VERSION), built by scripts/image.sh unless it is up to
# date; imported below under the name the kubelet asks for, so that no pod ever pulls it.
IMAGE=memq-rs:$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)
if [ -n "${MEMQ_TEST_IMAGE:-}" ] && [ -f "$MEMQ_TEST_IMAGE" ]; then
    # scripts/test.sh has just built it.
    IMAGE_ARCHIVE=$MEMQ_TEST_IMAGE
else
    say "the $IMAGE image (scripts/image.sh)"
    IMAGE_ARCHIVE=$("$ROOT/scripts/image.sh" | tail -n1) && [ -f "$IMAGE_ARCHIVE" ] ||
        die "scripts/image.sh did not build the image (why: above)"
fi
kube() { "$KUBECTL" --kubeconfig "$ADMIN" "$@"; }

# ---- one node, one owner -------------------------------------------------------------------
mkdir -p "$NODE_LIB" "$NODE_STATE"
exec 7>"$NODE_LIB/.lock"
flock 7
NODE_COMPONENTS=(containerd kubelet kube-proxy coredns)
node_alive() {
    local name
    for name in "${NODE_COMPONENTS[@]}"; do
        runs_binary "$(cat "$NODE_STATE/$name.pid" 2>/dev/null)" "$(sed -n "s#^$name ##p" "$NODE_STATE/binaries" 2>/dev/null)" || return 1
    done
}
node_ready() {
    [ "$(kube get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}
# owner_alive: the control plane the node serves still runs.
owner_alive() {
    local owner
    owner=$(cat "$NODE_LIB/owner" 2>/dev/null) || return 1
    kube_running "$owner"
}
wait_until=$((SECONDS + ${MEMQ_NODE_WAIT:-0}))
while node_alive && [ "$(cat "$NODE_LIB/owner" 2>/dev/null)" != "$RUN" ] && owner_alive; do
    if [ "$SECONDS" -ge "$wait_until" ]; then
        die "a memq node already runs for the control plane in $(cat "$NODE_LIB/owner") (one node per machine); stop it with MEMQ_KUBE_RUN=$(cat "$NODE_LIB/owner") scripts/kube-down.sh, or set MEMQ_NODE_WAIT=SECONDS to wait for it"
    fi
    say "a memq node runs for the control plane in $(cat "$NODE_LIB/owner"); waiting for it to stop ($((wait_until - SECONDS))s left)"
    flock -u 7
    sleep 15
    flock 7
done
if node_alive && [ "$(cat "$NODE_LIB/owner" 2>/dev/null)" = "$RUN" ] && node_ready; then
    say "node $NODE_NAME already running for $RUN; reusing it"
    exit 0
fi
if [ -e "$NODE_LIB/owner" ] || ip netns list | grep -qw "$NODE_NETNS"; then
    say "a stopped or partial node is recorded; removing what is left of it"
    "$ROOT/scripts/node-down.sh" --locked >&2
    mkdir -p "$NODE_LIB" "$NODE_STATE"
fi

up_started=$SECONDS
up_done=0
stop_failed_start() {
    [ "$up_done" = 0 ] || return 0
    rm -rf "$NODE_CACHE/failed-logs"
    cp -r "$NODE_LIB/logs" "$NODE_CACHE/failed-logs" 2>/dev/null || true
    "$ROOT/scripts/node-down.sh" --locked >&2 || true
    say "removed what this start made; its logs are in $NODE_CACHE/failed-logs"
}
trap stop_failed_start EXIT
echo "$RUN" >"$NODE_LIB/owner"

# ---- kernel settings the kubelet changes: kept to be restored ------------------------------
KERNEL_SETTINGS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
for key in "${KERNEL_SETTINGS[@]}"; do
    echo "$key=$(sysctl -n "$key")"
done >"$NODE_LIB/sysctl.saved"
# Directories outside ours that the node's parts write into: removed again if they made them.
for dir in /var/log/containers /run/containerd; do
    [ -e "$dir" ] || echo "$dir"
done >"$NODE_LIB/made-dirs"

# ---- network -------------------------------------------------------------------------------
say "network: namespace $NODE_NETNS, veth $NODE_VETH_HOST ($NODE_HOST_IP) / $NODE_VETH_NODE ($NODE_IP), pods $NODE_POD_CIDR, Services $NODE_SERVICE_CIDR"
API_PORT=$(cat "$RUN/apiserver.port")
ip netns add "$NODE_NETNS"
innode() { ip netns exec "$NODE_NETNS" "$@"; }
ip link add "$NODE_VETH_HOST" type veth peer name "$NODE_VETH_NODE" netns "$NODE_NETNS"
ip addr add "$NODE_HOST_IP" peer "$NODE_IP/32" dev "$NODE_VETH_HOST"
ip link set "$NODE_VETH_HOST" up
ip -n "$NODE_NETNS" link set lo up
ip -n "$NODE_NETNS" addr add "$NODE_IP" peer "$NODE_HOST_IP/32" dev "$NODE_VETH_NODE"
ip -n "$NODE_NETNS" link set "$NODE_VETH_NODE" up
ip route add "$NODE_POD_CIDR" via "$NODE_IP" dev "$NODE_VETH_HOST"
ip route add "$NODE_SERVICE_CIDR" via "$NODE_IP" dev "$NODE_VETH_HOST"
innode sysctl -q -w net.ipv4.ip_forward=1
# The API server listens on loopback only: the node reaches it through the host's end of the
# veth, forwarded to loopback (allowed on this interface alone).
sysctl -q -w "net.ipv4.conf.$NODE_VETH_HOST.route_localnet=1"
nft -f - <<EOF
table ip $NODE_NFT_TABLE {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        iifname "$NODE_VETH_HOST" ip daddr $NODE_HOST_IP tcp dport $NODE_API_PORT dnat to 127.0.0.1:$API_PORT
    }
}
EOF

# ---- files ---------------------------------------------------------------------------------
PKI=$NODE_LIB/pki
CONF=$NODE_LIB/conf
mkdir -p "$PKI" "$CONF" "$NODE_LIB/logs" "$NODE_LIB/kubelet" "$NODE_LIB/containerd" \
    "$NODE_LIB/cni/net.d" "$NODE_LIB/cni/networks" "$NODE_LIB/pod-logs" "$NODE_LIB/opt" \
    "$NODE_LIB/volumes" "$NODE_STATE/containerd" "$NODE_STATE/runc"
NODE_API=https://$NODE_HOST_IP:$NODE_API_PORT
kube_cert "$RUN/pki" "$PKI" kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "IP:$NODE_IP,DNS:$NODE_NAME"
kube_cert "$RUN/pki" "$PKI" kube-proxy "/CN=system:kube-proxy"
kube_cert "$RUN/pki" "$PKI" coredns "/CN=memq:coredns"
kube_kubeconfig "$CONF/kubelet.kubeconfig" "$NODE_API" "$RUN/pki/ca.crt" "$PKI/kubelet"
kube_kubeconfig "$CONF/kube-proxy.kubeconfig" "$NODE_API" "$RUN/pki/ca.crt" "$PKI/kube-proxy"
kube_kubeconfig "$CONF/coredns.kubeconfig" "https://127.0.0.1:$API_PORT" "$RUN/pki/ca.crt" "$PKI/coredns"
cp "$RUN/pki/ca.crt" "$PKI/ca.crt"
SOCKET=$NODE_STATE/containerd/containerd.sock

cat >"$CONF/containerd.toml" <<EOF
version = 3
root = "$NODE_LIB/containerd"
state = "$NODE_STATE/containerd"
# Nothing that would write outside the node's directories or reach another host.
disabled_plugins = [
  "io.containerd.nri.v1.nri",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]
[grpc]
  address = "$SOCKET"
[ttrpc]
  address = "$NODE_STATE/containerd/containerd.sock.ttrpc"
[plugins.'io.containerd.internal.v1.opt']
  path = "$NODE_LIB/opt"
[plugins.'io.containerd.image-verifier.v1.bindir']
  bin_dir = "$NODE_LIB/image-verifier"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE_IMAGE"
[plugins.'io.containerd.cri.v1.runtime']
  # The pods' sandbox has no CAP_SYS_RESOURCE: without this every container fails to set its
  # oom_score_adj below the runtime's.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$NODE_STATE/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$NODE_LIB/cni/net.d"
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
EOF

# The pods' network: a bridge in the node's namespace, addresses from 198.18.0.0/24, a route to
# the test-network range and none beyond it, no masquerading.
cat >"$NODE_LIB/cni/net.d/10-memq.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "memq",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$NODE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$NODE_LIB/cni/networks",
        "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "$NODE_POD_GATEWAY"}]],
        "routes": [{"dst": "198.18.0.0/15"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

# Pods of dnsPolicy Default get this resolver too: CoreDNS, never the machine's.
echo "nameserver $NODE_HOST_IP" >"$CONF/resolv.conf"
# The kubelet's cgroups sit under memq-node in every hierarchy.
for hierarchy in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
    [ -e "$hierarchy/cgroup.procs" ] || continue
    [ "$hierarchy" != /sys/fs/cgroup/ ] || [ -e /sys/fs/cgroup/cgroup.controllers ] || continue
    mkdir -p "$hierarchy/memq-node"
done
cat >"$CONF/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: AlwaysAllow
containerRuntimeEndpoint: unix://$SOCKET
cgroupDriver: cgroupfs
cgroupRoot: /memq-node
clusterDomain: cluster.local
clusterDNS: [$NODE_HOST_IP]
resolvConf: $CONF/resolv.conf
podLogsDir: $NODE_LIB/pod-logs
failSwapOn: false
# The disk is shared with builds: evict only when it is really full, and never collect the
# images imported here (nothing could pull them again).
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1Gi
  imagefs.available: 1Gi
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Status and probes answer within seconds; a deleted pod's containers are gone at once.
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
EOF
cat >"$CONF/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $CONF/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $NODE_POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
iptables:
  localhostNodePorts: false
# The conntrack table is the machine's: leave its limits and timeouts alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
DNS_READY_PORT=$(free_port)
cat >"$CONF/Corefile" <<EOF
cluster.local:53 18.198.in-addr.arpa:53 19.198.in-addr.arpa:53 {
    bind $NODE_HOST_IP
    ready 127.0.0.1:$DNS_READY_PORT
    errors
    cache 5
    kubernetes cluster.local 18.198.in-addr.arpa 19.198.in-addr.arpa {
        kubeconfig $CONF/coredns.kubeconfig memq-kube
        pods insecure
    }
}
.:53 {
    bind $NODE_HOST_IP
    errors
    template ANY ANY {
        rcode NXDOMAIN
    }
}
EOF

# ---- the API side --------------------------------------------------------------------------
# Service kubernetes has no endpoints of its own here (the API server listens on loopback): it
# points at the forward above. CoreDNS may read what it serves, nothing more.
kube apply --server-side --force-conflicts --field-manager=memq-node -f - >/dev/null <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes
  namespace: default
  labels:
    kubernetes.io/service-name: kubernetes
    endpointslice.kubernetes.io/managed-by: memq-node
addressType: IPv4
endpoints:
  - addresses: ["$NODE_HOST_IP"]
    conditions: {ready: true}
ports:
  - name: https
    port: $NODE_API_PORT
    protocol: TCP
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: memq:coredns
rules:
  - apiGroups: [""]
    resources: [services, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: memq:coredns
subjects:
  - kind: User
    name: memq:coredns
    apiGroup: rbac.authorization.k8s.io
roleRef:
  kind: ClusterRole
  name: memq:coredns
  apiGroup: rbac.authorization.k8s.io
EOF

# ---- start ---------------------------------------------------------------------------------
: >"$NODE_STATE/binaries"
# start NAME NETNS|host BINARY ARGS...: runs BINARY in its own session (in the node's network
# namespace unless host), logs to logs/NAME.log, records its PID and binary.
start() {
    local name=$1 where=$2 binary=$3
    shift 3
    local enter=()
    [ "$where" = host ] || enter=(nsenter "--net=/run/netns/$NODE_NETNS")
    # 7>&- 8>&- 9>&-: the daemons must not hold the scripts' locks.
    PATH=$CONTAINERD_BIN:$PATH setsid "${enter[@]}" "$binary" "$@" \
        </dev/null >"$NODE_LIB/logs/$name.log" 2>&1 7>&- 8>&- 9>&- &
    echo $! >"$NODE_STATE/$name.pid"
    echo "$name $binary" >>"$NODE_STATE/binaries"
}
# wait_for NAME SECONDS WHAT COMMAND...: polls COMMAND while NAME runs; fails with its log's end.
wait_for() {
    local name=$1 limit=$2 what=$3
    shift 3
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        local binary
        binary=$(sed -n "s#^$name ##p" "$NODE_STATE/binaries")
        if ! runs_binary "$(cat "$NODE_STATE/$name.pid")" "$binary" || [ "$SECONDS" -ge "$deadline" ]; then
            say "$name: $what did not happen within ${limit}s (or it exited); the end of its log:"
            tail -n 30 "$NODE_LIB/logs/$name.log" >&2 || true
            die "the node did not start; fix what the log says and run scripts/kube-up.sh --node again"
        fi
        sleep 0.5
    done
}
ctr() { "$CONTAINERD_BIN/ctr" --address "$SOCKET" --namespace k8s.io "$@"; }

say "starting containerd $CONTAINERD_VERSION"
start containerd netns "$CONTAINERD_BIN/containerd" --config "$CONF/containerd.toml"
wait_for containerd 60 "its socket answering" ctr version

# import ARCHIVE NAME: an OCI archive into containerd's CRI namespace as NAME, not to be
# collected.
import_image() {
    local archive=$1 name=$2
    ctr images import --local --index-name "$name" "$archive" >/dev/null ||
        die "importing $archive into containerd failed (above)"
    ctr images label "$name" io.cri-containerd.pinned=pinned >/dev/null
}
import_image "$PAUSE_ARCHIVE" "$PAUSE_IMAGE"
import_image "$REDIS_ARCHIVE" "$REDIS_IMAGE"
say "imported $PAUSE_IMAGE (the pod sandbox) and $REDIS_IMAGE (for manifests/redis)"
# A pod's `image: memq-rs:0.1.0` is docker.io/library/memq-rs:0.1.0 to the kubelet.
import_image "$IMAGE_ARCHIVE" "docker.io/library/$IMAGE"
say "imported $IMAGE from $IMAGE_ARCHIVE"

say "starting the kubelet ($KUBE_VERSION) as node $NODE_NAME ($NODE_IP)"
start kubelet netns "$BIN/kubelet" \
    --config="$CONF/kubelet.yaml" \
    --kubeconfig="$CONF/kubelet.kubeconfig" \
    --root-dir="$NODE_LIB/kubelet" \
    --hostname-override="$NODE_NAME" \
    --node-ip="$NODE_IP" \
    --v=1
say "starting kube-proxy (iptables) and CoreDNS ($COREDNS_VERSION, on $NODE_HOST_IP:53)"
start kube-proxy netns "$BIN/kube-proxy" --config="$CONF/kube-proxy.yaml" --v=1
start coredns host "$COREDNS_BIN" -conf "$CONF/Corefile"
wait_for kubelet 120 "node $NODE_NAME Ready" node_ready
dns_ready() { python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$DNS_READY_PORT/ready', timeout=2)"; }
wait_for coredns 60 "cluster.local served" dns_ready
# kube-proxy has written the Services' rules once it routes the API's own Service.
proxy_synced() { innode iptables -t nat -S KUBE-SERVICES 2>/dev/null | grep -q "$NODE_KUBERNETES_IP/32"; }
wait_for kube-proxy 60 "the Services' rules" proxy_synced

up_done=1
say "node $NODE_NAME ready in $((SECONDS - up_started))s (logs in $NODE_LIB/logs); scripts/kube-down.sh stops it with the control plane"
