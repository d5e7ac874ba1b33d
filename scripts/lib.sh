# shellcheck shell=bash
# Helpers shared by the scripts in this folder; sourced (`. "$(dirname "$0")/lib.sh"`), defines
# functions only.

# install_debian [apt-get install options] PKG...: installs Debian packages without questions
# (CI=true, no stdin), as root or through `sudo -n`, after refreshing the package lists.
install_debian() {
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo -n)
    echo "==> installing $* (Debian packages)" >&2
    # Waits for another apt-get to finish rather than failing on its lock.
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >/dev/null
}

# free_port: a free loopback port whose Redis Cluster bus port (+10000) is free too.
free_port() {
    python3 - <<'PY'
import random, socket
for _ in range(200):
    port = random.randint(10000, 50000)
    try:
        for p in (port, port + 10000):
            s = socket.socket()
            s.bind(("127.0.0.1", p))
            s.close()
    except OSError:
        continue
    print(port)
    break
else:
    raise SystemExit("no free port pair found")
PY
}

# kube_clear RUN: removes what scripts/kube-up.sh keeps in its state directory RUN, and
# nothing else (RUN may be any directory a user names).
kube_clear() {
    local run=$1
    rm -rf "${run:?}/pki" "$run/etcd" "$run/logs" "$run/bin" "$run/kubectl" "$run/apiserver.port" \
        "$run"/*.kubeconfig "$run"/*.pid
}

# kube_cert CA_DIR DIR NAME SUBJECT [SAN]: DIR/NAME.key and DIR/NAME.crt, a certificate for
# client and server use signed by the CA in CA_DIR (ca.crt, ca.key).
kube_cert() {
    local ca=$1 dir=$2 name=$3 subject=$4 san=${5:-}
    openssl req -newkey rsa:2048 -nodes -subj "$subject" \
        -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=serverAuth,clientAuth"
        [ -z "$san" ] || echo "subjectAltName=$san"
    } >"$dir/$name.ext"
    openssl x509 -req -in "$dir/$name.csr" -CA "$ca/ca.crt" -CAkey "$ca/ca.key" \
        -CAcreateserial -days 3650 -extfile "$dir/$name.ext" -out "$dir/$name.crt" 2>/dev/null
}

# kube_kubeconfig FILE SERVER CA_CRT CERT: a kubeconfig for SERVER that trusts CA_CRT and
# authenticates with CERT.crt and CERT.key, with the certificates inline.
kube_kubeconfig() {
    local file=$1 server=$2 ca cert key user
    ca=$(base64 -w0 "$3")
    cert=$(base64 -w0 "$4.crt")
    key=$(base64 -w0 "$4.key")
    user=$(basename "$4")
    cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: memq-kube
    cluster:
      server: $server
      certificate-authority-data: $ca
users:
  - name: $user
    user:
      client-certificate-data: $cert
      client-key-data: $key
contexts:
  - name: memq-kube
    context:
      cluster: memq-kube
      user: $user
      namespace: default
current-context: memq-kube
EOF
}

# runs_binary PID FILE: whether process PID runs the executable FILE (links resolved), so that
# a recorded PID that another process took over since is never taken for ours.
runs_binary() {
    [ -n "$1" ] && [ "$(readlink "/proc/$1/exe" 2>/dev/null)" = "$(readlink -f "$2")" ]
}

# kube_running RUN: whether the control plane of scripts/kube-up.sh with state directory RUN
# runs (its API server's recorded PID runs the binary it started).
kube_running() {
    runs_binary "$(cat "$1/kube-apiserver.pid" 2>/dev/null)" "$(cat "$1/bin" 2>/dev/null)/kube-apiserver"
}

# node_running RUN: whether the node of scripts/node-up.sh runs for the control plane in RUN.
node_running() {
    node_settings
    [ "$(cat "$NODE_LIB/owner" 2>/dev/null)" = "$1" ] &&
        runs_binary "$(cat "$NODE_STATE/kubelet.pid" 2>/dev/null)" "$(cat "$1/bin" 2>/dev/null)/kubelet"
}

# stop_all PID...: sends each process SIGTERM, then waits for each (ones already gone are
# skipped); for the EXIT traps of scripts that start servers.
stop_all() {
    local pid
    for pid in "$@"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "$@"; do
        wait "$pid" 2>/dev/null || true
    done
}

# start_redis [--cluster PRIMARIES]: a scratch Redis on loopback (or the primaries of a Redis
# Cluster), started by `cargo xtask redis` (xtask/), which holds it until its stdin closes; sets
# REDIS_URL (the nodes' URLs comma-separated with --cluster), REDIS_PORT (the first node's) and
# REDIS_PID. stop_redis stops it; the script's exit does too.
start_redis() {
    cargo build --quiet --locked -p xtask
    coproc XTASK_REDIS { exec "${CARGO_TARGET_DIR:-target}/debug/xtask" redis "$@"; }
    REDIS_PID=$XTASK_REDIS_PID
    REDIS_STDIN=${XTASK_REDIS[1]}
    if ! read -r REDIS_URL <&"${XTASK_REDIS[0]}"; then
        wait "$REDIS_PID" 2>/dev/null || true
        echo "Redis did not start (why: above); is redis-server installed?" >&2
        return 1
    fi
    REDIS_PORT=${REDIS_URL#redis://127.0.0.1:}
    REDIS_PORT=${REDIS_PORT%%/*}
}

# stop_redis: stops what start_redis started, and waits until it is gone.
stop_redis() {
    [ -n "${REDIS_STDIN:-}" ] || return 0
    exec {REDIS_STDIN}>&-
    REDIS_STDIN=
    wait "$REDIS_PID" 2>/dev/null || true
}

# node_settings: sets the names, addresses and paths of the one real node that
# scripts/node-up.sh runs on this machine (scripts/node-down.sh removes them all). Every host
# resource is named memq-*; every address is in the test-network range 198.18.0.0/15.
node_settings() {
    local root
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    KUBE_VERSION=$(sed -n 's#^require k8s.io/kubernetes \(v[0-9.]*\)$#\1#p' "$root/scripts/kube/go.mod")
    COREDNS_VERSION=$(sed -n 's#^require github.com/coredns/coredns \(v[0-9.]*\)$#\1#p' "$root/scripts/kube/coredns/go.mod")
    CONTAINERD_VERSION=v2.1.9
    PAUSE_VERSION=$(sed -n 's#^TAG ?= ##p' "$(go env GOMODCACHE)/k8s.io/kubernetes@$KUBE_VERSION/build/pause/Makefile" 2>/dev/null || true)
    PAUSE_VERSION=${PAUSE_VERSION:-3.10.1}
    NODE_CACHE=${MEMQ_NODE_CACHE:-$HOME/.cache/memq-rs/node}
    COREDNS_BIN=$NODE_CACHE/coredns-$COREDNS_VERSION/bin/coredns
    PAUSE_IMAGE=localhost/memq-pause:$PAUSE_VERSION
    PAUSE_ARCHIVE=$NODE_CACHE/pause-$PAUSE_VERSION/pause.oci.tar
    REDIS_IMAGE=localhost/memq-redis:bookworm
    REDIS_ARCHIVE=$NODE_CACHE/redis-bookworm/redis.oci.tar
    NODE_NAME=memq-node
    NODE_NETNS=memq-node
    NODE_VETH_HOST=memq-host
    NODE_VETH_NODE=memq-node0
    NODE_BRIDGE=memq-br0
    # The node's address (its end of the veth, in its network namespace) and the host's end.
    NODE_IP=198.19.255.1
    NODE_HOST_IP=198.19.255.254
    NODE_POD_CIDR=198.18.0.0/24
    NODE_POD_GATEWAY=198.18.0.1
    # The API server's Service range: `kubernetes` is its first address.
    NODE_SERVICE_CIDR=198.19.0.0/24
    NODE_KUBERNETES_IP=198.19.0.1
    # Where the node reaches the API server: the host's end of the veth, forwarded to the
    # loopback address the API server listens on.
    NODE_API_PORT=6443
    NODE_LIB=/var/lib/memq-node
    NODE_STATE=/run/memq-node
    NODE_NFT_TABLE=memq_node
}
