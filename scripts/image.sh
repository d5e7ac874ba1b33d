#!/usr/bin/env bash
# Builds the container image from the Dockerfile as committed, without a daemon: buildah
# (Debian's), `--pull=never`, the builder stage's `cargo auditable build --release --locked`
# run inside the build with its cache mounts kept between runs. Leaves the image in buildah's
# local storage (`podman run memq-rs:VERSION` finds it) and as an OCI archive, with a CycloneDX
# SBOM beside it. The LAST line printed is the archive's path.
#
#   scripts/image.sh                 # memq-rs:<workspace version>
#   scripts/image.sh --tag NAME      # another name
#   scripts/image.sh --no-cache      # every step again (the cargo cache mounts stay)
#
# The archive (memq-rs-VERSION.oci.tar in ~/.cache/memq-rs/image/out, MEMQ_IMAGE_OUT to move it)
# loads with `podman load -i`, `docker load -i` (Docker 25 or newer), `ctr images import`,
# `kind load image-archive`, `skopeo copy oci-archive:...`.
#
# Base images. The Dockerfile's bases (`rust:1.95-bookworm`, `gcr.io/distroless/cc-debian12:nonroot`)
# are never pulled: where an image of that name is in local storage it is used as it is (a user
# who pulled the real ones builds on them), otherwise a STAND-IN is made here once, from
# Debian's packages (mmdebstrap, bookworm), and stored under that very name:
#   - rust:X-bookworm: Debian bookworm with build-essential, pkg-config and ca-certificates, plus
#     this machine's rustup toolchain of release X copied in (/usr/local/rustup, commands in
#     /usr/local/cargo/bin, the official image's paths and environment), without rustup itself.
#   - gcr.io/distroless/cc-debian12:nonroot: only the files of libc6, libgcc-s1, tzdata,
#     ca-certificates (the bundle), netbase and base-files, /etc/passwd with root, nobody and
#     nonroot (65532), user 65532; no shell, no package manager.
# A stand-in carries the label io.memq-rs.stand-in=<what it stands for> and the key of its
# recipe (package lists, toolchain version, this script's rootfs.py); it is made again only when
# the key changes. Its root filesystem is cached in ~/.cache/memq-rs/image/bases. Users'
# builds (`docker build .`) use the real images from their registries; the stand-ins only let
# this machine, which reaches no container registry, build the same Dockerfile.
#
# Needs root (buildah's overlay storage and mmdebstrap's chroot), buildah, mmdebstrap, overlayfs,
# network access to deb.debian.org (the stand-ins, once) and crates.io (the build).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
. scripts/lib.sh

CACHE=${MEMQ_IMAGE_CACHE:-$HOME/.cache/memq-rs/image}
OUT=${MEMQ_IMAGE_OUT:-$CACHE/out}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
TAG=memq-rs:$VERSION
NO_CACHE=()
while [ $# -gt 0 ]; do
    case $1 in
        --tag) TAG=${2:?--tag NAME}; shift 2 ;;
        --no-cache) NO_CACHE=(--no-cache); shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { printf '  .. %s\n' "$*" >&2; }
die() { printf 'image.sh: %s\n' "$*" >&2; exit 1; }

# ---- prerequisites: one line naming what is missing and how to get it ------------------------
[ "$(id -u)" = 0 ] || die "needs root (buildah's overlay storage, mmdebstrap's chroot): run it with sudo"
command -v buildah >/dev/null 2>&1 \
    || die "buildah not found: install it (Debian/Ubuntu: apt-get install buildah; Fedora: dnf install buildah)"
command -v mmdebstrap >/dev/null 2>&1 \
    || die "mmdebstrap not found: install it (Debian/Ubuntu: apt-get install mmdebstrap), it makes the base images"
command -v python3 >/dev/null 2>&1 || die "python3 not found: install it (apt-get install python3)"
# runc rather than crun: crun refuses a host with hybrid cgroups (v1 controllers beside an empty
# v2 hierarchy), as this kind of machine has; runc takes both.
command -v runc >/dev/null 2>&1 || die "runc not found: install it (Debian/Ubuntu: apt-get install runc)"
grep -qw overlay /proc/filesystems 2>/dev/null || modprobe overlay 2>/dev/null \
    || die "the kernel has no overlayfs (buildah's storage driver): load it with modprobe overlay"
unshare --mount --pid --fork true 2>/dev/null \
    || die "cannot make mount and PID namespaces (unshare --mount --pid failed): containers cannot run here"

mkdir -p "$CACHE/bases" "$CACHE/tmp" "$OUT"
# One build at a time (tests that each ask for the image start it together): the others wait,
# then find every step cached.
exec 9>"$CACHE/image.lock"
if ! flock --nonblock 9; then
    say "another scripts/image.sh is running; waiting for it"
    flock 9
fi
# buildah keeps RUN --mount=type=cache directories under $TMPDIR/buildah-cache-UID: in the cache.
export TMPDIR=$CACHE/tmp

# ---- base images -------------------------------------------------------------------------------
MIRRORS=(
    "deb http://deb.debian.org/debian bookworm main"
    "deb http://deb.debian.org/debian bookworm-updates main"
    "deb http://deb.debian.org/debian-security bookworm-security main"
)
RUNTIME_PACKAGES="libc6 libgcc-s1 tzdata ca-certificates netbase base-files"
BUILDER_PACKAGES="build-essential,pkg-config,ca-certificates"

# label_of IMAGE LABEL: the label's value, empty when the image or label is absent.
label_of() {
    buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$2\"}}" "$1" 2>/dev/null || true
}

# debian_root DIR INCLUDE: a bookworm root filesystem with apt and the packages INCLUDE
# (comma-separated) into DIR, made by mmdebstrap.
debian_root() {
    say "mmdebstrap bookworm with $2 (a minute or two, from deb.debian.org)"
    mmdebstrap --mode=root --variant=apt --include="$2" --quiet bookworm "$1" "${MIRRORS[@]}" >&2
}

# tar_root DIR TAR: DIR as a tar archive with sorted names and numeric owners.
tar_root() {
    tar --sort=name --numeric-owner --xattrs -C "$1" -cf "$2.part" . && mv "$2.part" "$2"
}

# import_root TAR NAME KEY FOR CONFIG...: an image NAME from the root filesystem TAR, labelled
# as the stand-in for FOR with the recipe KEY, configured with `buildah config` arguments.
import_root() {
    local tar=$1 name=$2 key=$3 for=$4 ctr mnt
    shift 4
    ctr=$(buildah from --quiet scratch)
    mnt=$(buildah mount "$ctr")
    tar --numeric-owner --xattrs -C "$mnt" -xf "$tar"
    buildah umount "$ctr" >/dev/null
    buildah config --label io.memq-rs.stand-in="$for" --label io.memq-rs.stand-in.key="$key" \
        --created-by "scripts/image.sh: a local stand-in for $for, from Debian's packages" "$@" "$ctr"
    buildah commit --quiet --rm --timestamp 0 "$ctr" "$name" >/dev/null
}

# make_runtime TAR: the distroless/cc stand-in's root filesystem.
make_runtime() {
    local tar=$1 work
    work=$(mktemp -d "$CACHE/tmp/runtime.XXXXXX")
    debian_root "$work/staging" "${RUNTIME_PACKAGES// /,}"
    # Dependencies are followed (gcc-12-base) but for the ones only maintainer scripts need.
    # shellcheck disable=SC2086
    python3 scripts/image/rootfs.py "$work/staging" "$work/root" $RUNTIME_PACKAGES \
        --depends --exclude debconf openssl >/dev/null
    # The bundle ca-certificates' maintainer script made; what TLS clients read.
    install -D -m 0644 "$work/staging/etc/ssl/certs/ca-certificates.crt" \
        "$work/root/etc/ssl/certs/ca-certificates.crt"
    printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
        'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
        'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$work/root/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' >"$work/root/etc/group"
    printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' >"$work/root/etc/nsswitch.conf"
    install -d -m 0700 -o 65532 -g 65532 "$work/root/home/nonroot"
    install -d -m 0700 "$work/root/root"
    install -d -m 1777 "$work/root/tmp"
    tar_root "$work/root" "$tar"
    rm -rf "$work"
}

# make_builder TAR TOOLCHAIN: the rust:X-bookworm stand-in's root filesystem, with the rustup
# toolchain directory TOOLCHAIN copied in (without its documentation).
make_builder() {
    local tar=$1 toolchain=$2 work name
    work=$(mktemp -d "$CACHE/tmp/builder.XXXXXX")
    debian_root "$work/root" "$BUILDER_PACKAGES"
    name=$(basename "$toolchain")
    say "copying the Rust toolchain $name"
    mkdir -p "$work/root/usr/local/rustup/toolchains" "$work/root/usr/local/cargo/bin"
    tar -C "$(dirname "$toolchain")" --exclude="$name/share/doc" --exclude="$name/lib/rustlib/src" \
        -cf - "$name" | tar -C "$work/root/usr/local/rustup/toolchains" -xf -
    for bin in "$work/root/usr/local/rustup/toolchains/$name/bin/"*; do
        ln -s "../../rustup/toolchains/$name/bin/$(basename "$bin")" \
            "$work/root/usr/local/cargo/bin/$(basename "$bin")"
    done
    rm -rf "$work/root/var/lib/apt/lists/"* "$work/root/var/cache/apt/"*
    tar_root "$work/root" "$tar"
    rm -rf "$work"
}

# rust_toolchain RELEASE: the directory of a rustup toolchain of RELEASE (1.95 or 1.95.0), the
# newest patch release if there are several.
rust_toolchain() {
    local home dir version best="" best_version=""
    home=$(rustup show home 2>/dev/null) || return 1
    for dir in "$home"/toolchains/*/; do
        dir=$(cd "$dir" && pwd -P)
        version=$("$dir/bin/rustc" --version 2>/dev/null | cut -d' ' -f2) || continue
        case $version in
            "$1" | "$1".*) ;;
            *) continue ;;
        esac
        [[ $version == *-* ]] && continue # a beta or nightly is not the release
        if [ -z "$best" ] || [ "$(printf '%s\n%s\n' "$best_version" "$version" | sort -V | tail -n1)" = "$version" ]; then
            best=$dir best_version=$version
        fi
    done
    [ -n "$best" ] && echo "$best"
}

# stand_in NAME: makes sure the base image NAME is in local storage: the real one if it is
# there, else the stand-in of its recipe (made or re-imported when missing or stale), stored
# under the name as Docker reads it (`rust:1.95-bookworm` is docker.io/library/rust:1.95-bookworm,
# which a FROM of the short name finds).
stand_in() {
    local name=$1 recipe key tar toolchain="" release
    case $name in
        rust:*-bookworm)
            release=${name#rust:}
            release=${release%-bookworm}
            toolchain=$(rust_toolchain "$release") \
                || die "base $name: no Rust $release toolchain here to copy into its stand-in: rustup toolchain install $release"
            recipe="builder|$BUILDER_PACKAGES|$("$toolchain/bin/rustc" --version)" ;;
        gcr.io/distroless/cc-debian12:nonroot)
            recipe="runtime|$RUNTIME_PACKAGES|$(cat scripts/image/rootfs.py)" ;;
        *)
            if buildah inspect --type image "$name" >/dev/null 2>&1; then
                say "base $name: found in local storage"
                return
            fi
            die "base $name has no local stand-in recipe and is not in local storage: pull it first (podman pull $name)" ;;
    esac
    key=$(printf '%s\n%s\n' "$recipe" "${MIRRORS[*]}" | sha256sum | cut -c1-16)
    case ${name%%/*} in
        *.*|*:*|localhost) ;;
        *) if [[ $name == */* ]]; then name=docker.io/$name; else name=docker.io/library/$name; fi ;;
    esac
    if buildah inspect --type image "$name" >/dev/null 2>&1; then
        case $(label_of "$name" io.memq-rs.stand-in.key) in
            "$key") say "base $name: the stand-in made before (key $key)"; return ;;
            "") say "base $name: found in local storage (not a stand-in), used as it is"; return ;;
            *) say "base $name: the stand-in is stale, making it again" ;;
        esac
    fi
    tar="$CACHE/bases/$(printf '%s' "$name" | tr '/:' '__')-$key.tar"
    if [ ! -f "$tar" ]; then
        say "base $name: making its stand-in from Debian's packages"
        if [ -n "$toolchain" ]; then make_builder "$tar" "$toolchain"; else make_runtime "$tar"; fi
    fi
    if [ -n "$toolchain" ]; then
        import_root "$tar" "$name" "$key" "$name" \
            --env RUSTUP_HOME=/usr/local/rustup --env CARGO_HOME=/usr/local/cargo \
            --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            --env RUST_VERSION="$release" --cmd bash
    else
        import_root "$tar" "$name" "$key" "$name" --user 65532:65532 --workingdir /home/nonroot \
            --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
    fi
    say "base $name: stand-in stored (key $key)"
}

started=$SECONDS
# The bases the Dockerfile names (a FROM of an earlier stage is not a base).
stages=()
while read -r from base rest; do
    [ "${from^^}" = FROM ] || continue
    local_stage=false
    for stage in "${stages[@]}"; do [ "$stage" = "$base" ] && local_stage=true; done
    $local_stage || stand_in "$base"
    if [[ ${rest,,} =~ ^as[[:space:]]+([^[:space:]]+) ]]; then stages+=("${BASH_REMATCH[1]}"); fi
    final_base=$base final_local=$local_stage
done < <(grep -iE '^[[:space:]]*FROM[[:space:]]' Dockerfile | sed -E 's/--platform=[^ ]+ //')
# The manifest names the final stage's base and its digest. buildah takes that digest from the
# image it starts the stage's remaining steps from, which is a cached step's image in a build
# that reuses steps and the base in one that does not: the same tree gave two digests. Named
# here, it is the base's own, in both.
BASE_ANNOTATION=()
if ! $final_local; then
    base_digest=$(buildah inspect --type image --format '{{.FromImageDigest}}' "$final_base")
    BASE_ANNOTATION=(--annotation "org.opencontainers.image.base.name=$final_base"
        --annotation "org.opencontainers.image.base.digest=$base_digest")
fi

# ---- the build ---------------------------------------------------------------------------------
# The context, as buildah sends it after .dockerignore: copied into a throwaway image.
probe=$(mktemp "$CACHE/tmp/context.XXXXXX")
printf 'FROM scratch\nCOPY . /context\n' >"$probe"
buildah build --runtime runc --quiet --pull=never --layers=false -f "$probe" -t localhost/memq-rs-context . >/dev/null
ctr=$(buildah from --quiet localhost/memq-rs-context)
context_bytes=$(du -sb "$(buildah mount "$ctr")/context" | cut -f1)
context_files=$(find "$(buildah mount "$ctr")/context" -type f | wc -l)
buildah rm "$ctr" >/dev/null
buildah rmi localhost/memq-rs-context >/dev/null
rm -f "$probe"
say "build context: $context_files files, $((context_bytes / 1024)) KiB (after .dockerignore)"

# One timestamp for the image and its files: the commit's, so that an unchanged tree builds
# the same image (digest) again. Without the build history in the config: each step's entry
# carries the time of the build that made it, and a step taken from the cache of an earlier
# commit's build would keep that commit's time.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
export SOURCE_DATE_EPOCH
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
# The build's RUN steps trust what this machine trusts: its CA bundle mounted read-only over the
# builder's (where this machine reaches crates.io through a TLS-inspecting proxy, the builder's
# Debian bundle alone would refuse it). A mount is no part of any layer.
CA_BUNDLE=${MEMQ_IMAGE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
CA_MOUNT=()
[ -f "$CA_BUNDLE" ] && CA_MOUNT=(--volume "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
say "building $TAG from the Dockerfile (buildah, --pull=never; the first build compiles every crate)"
build_started=$SECONDS
build_log=$(mktemp "$CACHE/tmp/build.XXXXXX")
buildah build --runtime runc --pull=never --layers --force-rm "${NO_CACHE[@]}" --network=host "${CA_MOUNT[@]}" \
    --timestamp "$SOURCE_DATE_EPOCH" --omit-history "${BASE_ANNOTATION[@]}" \
    --build-arg REVISION="$REVISION" \
    -t "$TAG" -f Dockerfile . 2>&1 | tee "$build_log" >&2
say "built in $((SECONDS - build_started)) s"

# Each build leaves its steps' images for the next one to reuse (1 GB and more for the builder
# stage). Those of this script's previous build that this one did not use, and that nothing
# names any more, are removed; no other image is touched.
used=$(grep -oE '^--> (Using cache )?[0-9a-f]{11,64}' "$build_log" | awk '{print substr($NF, 1, 11)}')
rm -f "$build_log"
layers_file=$CACHE/build-layers
if [ -f "$layers_file" ]; then
    dangling=$(buildah images --filter dangling=true --quiet --no-trunc 2>/dev/null | sed 's/^sha256://' | cut -c1-11)
    while read -r old; do
        [ -n "$old" ] || continue
        grep -qx "$old" <<<"$used" && continue
        grep -qx "$old" <<<"$dangling" || continue
        buildah rmi "$old" >/dev/null 2>&1 || true
    done <"$layers_file"
fi
printf '%s\n' "$used" >"$layers_file"

# ---- the archive and its SBOM ------------------------------------------------------------------
name=${TAG##*/}
archive="$OUT/${name//:/-}.oci.tar"
rm -f "$archive.part"
buildah push --quiet "$TAG" "oci-archive:$archive.part:$TAG" >&2
mv "$archive.part" "$archive"
cargo build --quiet --locked -p xtask
"${CARGO_TARGET_DIR:-target}/debug/xtask" image-report "$archive" "${archive%.oci.tar}.cdx.json" >&2
say "image.sh done in $((SECONDS - started)) s; load it with: podman load -i $archive"
echo "$archive"
