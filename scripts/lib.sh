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
