#!/usr/bin/env bash
# Builds what a node of scripts/node-up.sh runs besides the kubelet and kube-proxy (which
# scripts/kube-up.sh builds with the control plane): containerd, its runc shim and ctr, built
# inside a copy of containerd's own module (its go.mod has exclude directives, so
# `go install ...@version` refuses it); CoreDNS with only the plugins the node's DNS uses
# (scripts/kube/coredns); the pod sandbox ("pause") image, Kubernetes' own pause.c of the pinned
# release compiled statically and packed as an OCI archive with buildah; and the Redis image the
# redis overlay runs here (localhost/memq-redis:bookworm): Debian bookworm's redis-server, made as
# scripts/image.sh makes its base images (mmdebstrap, then only the packages' own files by
# scripts/image/rootfs.py: no shell, no package manager). Each is built once into
# $MEMQ_NODE_CACHE (default ~/.cache/memq-rs/node) and reused.
# Prints nothing on stdout; progress on stderr.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
node_settings

say() { printf '[node-build] %s\n' "$*" >&2; }
die() { printf '[node-build] ERROR %s\n' "$*" >&2; exit 1; }

for tool in go gcc buildah mmdebstrap python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found on PATH; scripts/node-up.sh installs it, or install it and run this again"
done

mkdir -p "$NODE_CACHE"
exec 8>"$NODE_CACHE/.build-lock"
flock 8

# module_dir MODULE@VERSION: the module's directory in Go's module cache (downloaded once).
module_dir() {
    local scratch
    scratch=$(mktemp -d)
    (cd "$scratch" && GOFLAGS=-mod=mod go mod download -json "$1") | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'
    rm -rf "$scratch"
}

# ---- containerd ----------------------------------------------------------------------------
CONTAINERD_BIN=$NODE_CACHE/containerd-$CONTAINERD_VERSION/bin
if [ ! -x "$CONTAINERD_BIN/ctr" ]; then
    started=$SECONDS
    say "building containerd $CONTAINERD_VERSION (containerd, containerd-shim-runc-v2, ctr) from its Go module (first time only: about 3 minutes on 2 cores)"
    dir=$(module_dir "github.com/containerd/containerd/v2@$CONTAINERD_VERSION") ||
        die "cannot download containerd $CONTAINERD_VERSION; check that the Go module proxy is reachable (go env GOPROXY)"
    src=$NODE_CACHE/containerd-$CONTAINERD_VERSION/src
    rm -rf "$src"
    mkdir -p "$(dirname "$src")" "$CONTAINERD_BIN"
    cp -r "$dir" "$src"
    chmod -R u+w "$src"
    ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=${CONTAINERD_VERSION#v}"
    for cmd in containerd containerd-shim-runc-v2 ctr; do
        say "  go build ./cmd/$cmd"
        # The shim is static (as upstream ships it): it runs in the node's mount namespace.
        cgo=1
        [ "$cmd" != containerd-shim-runc-v2 ] || cgo=0
        (cd "$src" && CGO_ENABLED=$cgo go build -trimpath -tags no_btrfs -ldflags "$ldflags" \
            -o "$CONTAINERD_BIN/$cmd.tmp" "./cmd/$cmd") ||
            die "building containerd's $cmd failed (above); run this script again"
        mv "$CONTAINERD_BIN/$cmd.tmp" "$CONTAINERD_BIN/$cmd"
    done
    rm -rf "$src"
    say "built containerd in $((SECONDS - started))s -> $CONTAINERD_BIN"
fi

# ---- CoreDNS -------------------------------------------------------------------------------
if [ ! -x "$COREDNS_BIN" ]; then
    started=$SECONDS
    say "building CoreDNS $COREDNS_VERSION (bind, ready, errors, cache, template, kubernetes) from Go modules (first time only: about 2 minutes)"
    mkdir -p "$(dirname "$COREDNS_BIN")"
    (cd "$ROOT/scripts/kube/coredns" && go build -trimpath -ldflags "-s -w" -o "$COREDNS_BIN.tmp" .) ||
        die "building CoreDNS failed (above); check that the Go module proxy is reachable and run this again"
    mv "$COREDNS_BIN.tmp" "$COREDNS_BIN"
    say "built CoreDNS in $((SECONDS - started))s -> $COREDNS_BIN"
fi

# ---- the pause image -----------------------------------------------------------------------
if [ ! -f "$PAUSE_ARCHIVE" ]; then
    started=$SECONDS
    say "building the pod sandbox image $PAUSE_IMAGE from Kubernetes' pause.c ($KUBE_VERSION)"
    kube_dir=$(module_dir "k8s.io/kubernetes@$KUBE_VERSION") ||
        die "cannot download k8s.io/kubernetes $KUBE_VERSION; check that the Go module proxy is reachable"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    # As Kubernetes' build/pause/Makefile compiles it.
    gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-memq" \
        -o "$work/pause" "$kube_dir/build/pause/linux/pause.c" ||
        die "compiling pause.c failed (above); the static C library comes with Debian's libc6-dev"
    # A buildah storage of the node's own, so that nothing else's images are touched.
    store=(--root "$NODE_CACHE/buildah/root" --runroot "$NODE_CACHE/buildah/runroot" --storage-driver vfs)
    container=$(buildah "${store[@]}" from scratch)
    buildah "${store[@]}" copy --quiet "$container" "$work/pause" /pause >/dev/null
    buildah "${store[@]}" config --entrypoint '["/pause"]' --user 65535:65535 \
        --label org.opencontainers.image.title=memq-pause "$container"
    mkdir -p "$(dirname "$PAUSE_ARCHIVE")"
    buildah "${store[@]}" commit --quiet --format oci --rm "$container" \
        "oci-archive:$PAUSE_ARCHIVE.tmp:$PAUSE_IMAGE" >/dev/null
    mv "$PAUSE_ARCHIVE.tmp" "$PAUSE_ARCHIVE"
    rm -rf "$work"
    say "built $PAUSE_IMAGE in $((SECONDS - started))s -> $PAUSE_ARCHIVE"
fi

# ---- the Redis image -----------------------------------------------------------------------
if [ ! -f "$REDIS_ARCHIVE" ]; then
    started=$SECONDS
    say "building $REDIS_IMAGE from Debian bookworm's redis-server (mmdebstrap: a minute or two, from deb.debian.org)"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    mmdebstrap --mode=root --variant=apt --include=redis-server --quiet bookworm "$work/staging" \
        "deb http://deb.debian.org/debian bookworm main" \
        "deb http://deb.debian.org/debian-security bookworm-security main" >&2 ||
        die "mmdebstrap failed (above); it needs deb.debian.org"
    # The server and redis-cli (the manifest's readiness probe) with what they link to; not
    # what only maintainer scripts use.
    python3 "$ROOT/scripts/image/rootfs.py" "$work/staging" "$work/root" redis-server \
        --depends --exclude adduser debconf lsb-base init-system-helpers >/dev/null
    printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'redis:x:999:999:redis:/data:/sbin/nologin' \
        >"$work/root/etc/passwd"
    printf '%s\n' 'root:x:0:' 'redis:x:999:' >"$work/root/etc/group"
    install -d -m 0755 -o 999 -g 999 "$work/root/data"
    store=(--root "$NODE_CACHE/buildah/root" --runroot "$NODE_CACHE/buildah/runroot" --storage-driver vfs)
    container=$(buildah "${store[@]}" from scratch)
    mount=$(buildah "${store[@]}" mount "$container")
    cp -a "$work/root/." "$mount/"
    buildah "${store[@]}" umount "$container" >/dev/null
    buildah "${store[@]}" config --env PATH=/usr/local/bin:/usr/bin:/bin --user 999:999 \
        --workingdir /data --entrypoint '["redis-server"]' --port 6379 \
        --label org.opencontainers.image.title=memq-redis "$container"
    mkdir -p "$(dirname "$REDIS_ARCHIVE")"
    buildah "${store[@]}" commit --quiet --format oci --rm "$container" \
        "oci-archive:$REDIS_ARCHIVE.tmp:$REDIS_IMAGE" >/dev/null
    mv "$REDIS_ARCHIVE.tmp" "$REDIS_ARCHIVE"
    rm -rf "$work"
    say "built $REDIS_IMAGE in $((SECONDS - started))s -> $REDIS_ARCHIVE"
fi
