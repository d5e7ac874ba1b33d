#!/usr/bin/env bash
# Stops the control plane that scripts/kube-up.sh started: first its node, if `--node` started
# one for it (scripts/node-down.sh: containers, network namespace, mounts, cgroups, kernel
# settings), then exactly the processes whose PIDs it recorded (and only while each PID still
# runs the binary it started), then removes its state (certificates, etcd data, logs). Safe to
# run when nothing runs.
# Environment: MEMQ_KUBE_RUN (default ~/.cache/memq-rs/kube/run), as for kube-up.sh.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUN=${MEMQ_KUBE_RUN:-$HOME/.cache/memq-rs/kube/run}
say() { printf '[kube-down] %s\n' "$*" >&2; }

[ -d "$RUN" ] || { say "nothing to stop ($RUN does not exist)"; exit 0; }
# kube-up.sh calls this with the lock already held.
if [ "${1:-}" != --locked ]; then
    exec 9>"$RUN/.lock"
    flock 9
fi

# The node first, while the API server still answers: only the node of this control plane.
node_settings
if [ "$(cat "$NODE_LIB/owner" 2>/dev/null)" = "$RUN" ]; then
    "$(dirname "${BASH_SOURCE[0]}")/node-down.sh"
fi

# Whether PID runs NAME from the binaries kube-up.sh started (recorded in RUN/bin), so that a
# PID reused by another process, an etcd of the system's included, is never signalled.
bin=$(cat "$RUN/bin" 2>/dev/null || true)
ours() {
    [ -n "$bin" ] && runs_binary "$1" "$bin/$2"
}

pids=()
# Clients first, etcd last, so that nothing logs a storm of errors on the way down.
for name in kube-scheduler kube-controller-manager kube-apiserver etcd; do
    file=$RUN/$name.pid
    [ -f "$file" ] || continue
    pid=$(cat "$file")
    if ours "$pid" "$name"; then
        say "stopping $name (pid $pid)"
        kill "$pid" 2>/dev/null || true
        pids+=("$pid:$name")
    fi
    rm -f "$file"
done
for entry in "${pids[@]}"; do
    pid=${entry%%:*}
    name=${entry#*:}
    for _ in $(seq 100); do
        ours "$pid" "$name" || break
        sleep 0.1
    done
    if ours "$pid" "$name"; then
        say "$name (pid $pid) did not stop within 10s of SIGTERM; killing it"
        kill -9 "$pid" 2>/dev/null || true
    fi
done
kube_clear "$RUN"
say "stopped"
