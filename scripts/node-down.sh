#!/usr/bin/env bash
# Removes the node of scripts/node-up.sh and everything it made: stops exactly the processes it
# recorded (kube-proxy, the kubelet, CoreDNS, containerd; each only while its PID still runs
# the binary it started), then the pods' containers and their shims, the mounts under
# /var/lib/memq-node and /run/memq-node, the cgroups memq-node, the network namespace memq-node
# with its bridge, veth, iptables rules and conntrack entries, the host's routes to it and its
# nftables table memq_node, the Node object, the kernel settings the kubelet changed (restored),
# and the node's directories. Safe to run when nothing runs. scripts/kube-down.sh calls it for
# the node of its control plane.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
node_settings
say() { printf '[node-down] %s\n' "$*" >&2; }

[ -d "$NODE_LIB" ] || ip netns list | grep -qw "$NODE_NETNS" || { say "no node to stop"; exit 0; }
[ "$(id -u)" = 0 ] || { say "ERROR removing the node needs root"; exit 1; }
# node-up.sh calls this with the lock already held.
if [ "${1:-}" != --locked ]; then
    mkdir -p "$NODE_LIB"
    exec 7>"$NODE_LIB/.lock"
    flock 7
fi

# The Node object, while its control plane still answers (pods on it go with their namespaces).
owner=$(cat "$NODE_LIB/owner" 2>/dev/null || true)
if [ -n "$owner" ] && [ -x "$owner/kubectl" ]; then
    "$owner/kubectl" --kubeconfig "$owner/admin.kubeconfig" delete node "$NODE_NAME" \
        --wait=false --request-timeout=5s >/dev/null 2>&1 || true
fi

# 1. The node's processes, clients of containerd first.
pids=()
for name in kube-proxy kubelet coredns containerd; do
    file=$NODE_STATE/$name.pid
    [ -f "$file" ] || continue
    pid=$(cat "$file")
    binary=$(sed -n "s#^$name ##p" "$NODE_STATE/binaries" 2>/dev/null)
    if runs_binary "$pid" "$binary"; then
        say "stopping $name (pid $pid)"
        kill "$pid" 2>/dev/null || true
        pids+=("$pid:$binary")
    fi
done
for entry in "${pids[@]}"; do
    pid=${entry%%:*}
    binary=${entry#*:}
    for _ in $(seq 100); do
        runs_binary "$pid" "$binary" || break
        sleep 0.1
    done
    runs_binary "$pid" "$binary" && kill -9 "$pid" 2>/dev/null || true
done

# 2. The pods' processes: every process in a cgroup under memq-node, and the runc shims of our
# containerd (their command line names its socket).
for hierarchy in /sys/fs/cgroup/*/memq-node /sys/fs/cgroup/memq-node; do
    [ -d "$hierarchy" ] || continue
    find "$hierarchy" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null || true
done
for exe in /proc/[0-9]*/exe; do
    pid=${exe#/proc/}
    pid=${pid%/exe}
    runs_binary "$pid" "$NODE_CACHE/containerd-$CONTAINERD_VERSION/bin/containerd-shim-runc-v2" || continue
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$NODE_STATE/containerd/containerd.sock" || continue
    kill -9 "$pid" 2>/dev/null || true
done
for hierarchy in /sys/fs/cgroup/*/memq-node /sys/fs/cgroup/memq-node; do
    [ -d "$hierarchy" ] || continue
    # Leaves first: a cgroup is removed once it has no children and no processes.
    for _ in $(seq 50); do
        find "$hierarchy" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [ -d "$hierarchy" ] || break
        sleep 0.1
    done
    [ ! -d "$hierarchy" ] || say "WARNING cgroup $hierarchy is still busy"
done

# 3. Mounts under the node's directories (secrets, overlays, pods' network namespaces), deepest
# first.
for dir in "$NODE_LIB" "$NODE_STATE"; do
    { findmnt -rn -o TARGET | grep -E "^$dir(/|$)" || true; } | sort -r | while read -r target; do
        umount -l "$target" 2>/dev/null || true
    done
done

# 4. The network: the namespace takes the bridge, the pods' veths, its iptables rules and
# conntrack entries with it; then the host's side.
if ip netns list | grep -qw "$NODE_NETNS"; then
    say "removing network namespace $NODE_NETNS (bridge $NODE_BRIDGE, kube-proxy's rules)"
    ip netns delete "$NODE_NETNS"
fi
ip link delete "$NODE_VETH_HOST" 2>/dev/null || true
ip route delete "$NODE_POD_CIDR" 2>/dev/null || true
ip route delete "$NODE_SERVICE_CIDR" 2>/dev/null || true
nft delete table ip "$NODE_NFT_TABLE" 2>/dev/null || true
conntrack -D -s "$NODE_IP" >/dev/null 2>&1 || true
conntrack -D -d "$NODE_HOST_IP" >/dev/null 2>&1 || true

# 5. The kernel settings the kubelet changed, and what its parts made outside our directories.
if [ -f "$NODE_LIB/sysctl.saved" ]; then
    while IFS= read -r setting; do
        sysctl -q -w "$setting" >/dev/null 2>&1 || say "WARNING could not restore $setting"
    done <"$NODE_LIB/sysctl.saved"
fi
if [ -d /var/log/containers ]; then
    find /var/log/containers -maxdepth 1 -type l -lname "$NODE_LIB/*" -delete 2>/dev/null || true
fi
if [ -f "$NODE_LIB/made-dirs" ]; then
    while IFS= read -r dir; do
        case $dir in
            # The shims' sockets (containerd's fixed directory): all of ours, as we made it.
            /run/containerd) rm -rf /run/containerd ;;
            *) rmdir "$dir" 2>/dev/null || true ;;
        esac
    done <"$NODE_LIB/made-dirs"
fi

# 6. The node's directories (keeping the lock file while we hold it).
rm -rf "${NODE_STATE:?}"
find "$NODE_LIB" -mindepth 1 -maxdepth 1 ! -name .lock -exec rm -rf {} + 2>/dev/null || true
if [ "${1:-}" != --locked ]; then
    rm -rf "$NODE_LIB"
fi
say "node removed"
