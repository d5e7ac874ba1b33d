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
