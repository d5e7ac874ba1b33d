# shellcheck shell=bash
# Helpers shared by the scripts in this folder; sourced (`. "$(dirname "$0")/lib.sh"`), defines
# functions only.

# install_debian [apt-get install options] PKG...: installs Debian packages without questions
# (CI=true, no stdin), as root or through `sudo -n`, after refreshing the package lists.
install_debian() {
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo -n)
    echo "==> installing $* (Debian packages)" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
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

# runs_binary PID FILE: whether process PID runs the executable FILE (links resolved), so that
# a recorded PID that another process took over since is never taken for ours.
runs_binary() {
    [ -n "$1" ] && [ "$(readlink "/proc/$1/exe" 2>/dev/null)" = "$(readlink -f "$2")" ]
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
