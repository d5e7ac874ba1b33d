#!/usr/bin/env python3
"""Copies the files of some Debian packages out of a root filesystem made by mmdebstrap into an
empty directory: the content of a minimal image (no shell, no package manager unless asked for).

    rootfs.py STAGING OUT PKG... [--depends] [--exclude PKG...]

STAGING is a Debian root filesystem with the packages installed (its dpkg database says which
files each one owns); OUT receives those files with their modes, owners and links, in the merged
/usr layout of STAGING (bin -> usr/bin, lib -> usr/lib, ...). With --depends the packages'
Depends and Pre-Depends are followed (the installed alternative of each), except --exclude.
Documentation is left out but for each package's copyright file. Each package's dpkg status
stanza is written to OUT/var/lib/dpkg/status.d/PKG, where image scanners look for the packages
of a distroless image, so that they can tell what the image holds.
"""

import argparse
import os
import re
import shutil
import stat
import sys

# Paths never copied (besides /usr/share/doc, of which only copyright files are kept).
SKIP = ("/usr/share/man/", "/usr/share/info/", "/usr/share/lintian/", "/usr/share/locale/")


def read_status(staging):
    """Package name -> its stanza in the dpkg status file, for installed packages."""
    path = os.path.join(staging, "var/lib/dpkg/status")
    with open(path, encoding="utf-8") as f:
        stanzas = f.read().split("\n\n")
    packages = {}
    for stanza in stanzas:
        fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", stanza, re.M))
        if fields.get("Status", "").endswith(" installed"):
            packages[fields["Package"]] = (stanza.strip() + "\n", fields)
    return packages


def depends(fields, installed):
    """The installed packages that a stanza depends on (first installed alternative each)."""
    out = []
    for key in ("Pre-Depends", "Depends"):
        for clause in filter(None, (c.strip() for c in fields.get(key, "").split(","))):
            for alternative in clause.split("|"):
                name = alternative.strip().split(" ")[0].split(":")[0]
                if name in installed:
                    out.append(name)
                    break
    return out


def closure(roots, installed, follow, exclude):
    seen, todo = [], list(roots)
    while todo:
        name = todo.pop(0)
        if name in seen or name in exclude:
            continue
        if name not in installed:
            sys.exit(f"rootfs.py: package {name} is not installed in the staging root")
        seen.append(name)
        if follow:
            todo.extend(depends(installed[name][1], installed))
    return seen


def owned_files(staging, name):
    info = os.path.join(staging, "var/lib/dpkg/info")
    for candidate in (f"{name}.list", f"{name}:amd64.list", f"{name}:all.list"):
        path = os.path.join(info, candidate)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                return [line.rstrip("\n") for line in f if line.strip() not in ("", "/.")]
    sys.exit(f"rootfs.py: no file list for package {name}")


def canonical(staging, path):
    """PATH with its parent directories resolved inside STAGING (merged /usr), the last part kept."""
    parent, base = os.path.split(path)
    real_parent = os.path.realpath(os.path.join(staging, parent.lstrip("/")))
    rel = os.path.relpath(real_parent, staging)
    if rel.startswith(".."):
        sys.exit(f"rootfs.py: {path} leaves the staging root")
    return os.path.normpath(os.path.join(rel, base))


def copy_entry(staging, out, rel):
    src, dst = os.path.join(staging, rel), os.path.join(out, rel)
    st = os.lstat(src)
    # Parent directories as they are in the staging root.
    parts = rel.split(os.sep)[:-1]
    for i in range(1, len(parts) + 1):
        d_rel = os.path.join(*parts[:i])
        d_dst = os.path.join(out, d_rel)
        if not os.path.lexists(d_dst):
            d_st = os.lstat(os.path.join(staging, d_rel))
            os.mkdir(d_dst)
            os.chown(d_dst, d_st.st_uid, d_st.st_gid)
            os.chmod(d_dst, stat.S_IMODE(d_st.st_mode))
    if os.path.lexists(dst):
        return
    if stat.S_ISDIR(st.st_mode):
        os.mkdir(dst)
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISREG(st.st_mode):
        shutil.copyfile(src, dst)
    else:
        return
    os.lchown(dst, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("staging")
    parser.add_argument("out")
    parser.add_argument("packages", nargs="+")
    parser.add_argument("--depends", action="store_true")
    parser.add_argument("--exclude", nargs="*", default=[])
    args = parser.parse_args()

    installed = read_status(args.staging)
    names = closure(args.packages, installed, args.depends, set(args.exclude))
    os.makedirs(args.out, exist_ok=True)
    # The merged-/usr links of the staging root, so that /lib64/ld-linux... resolves.
    for link in ("bin", "sbin", "lib", "lib64"):
        src = os.path.join(args.staging, link)
        if os.path.islink(src) and not os.path.lexists(os.path.join(args.out, link)):
            os.symlink(os.readlink(src), os.path.join(args.out, link))
    for name in names:
        for path in owned_files(args.staging, name):
            if path.startswith(SKIP):
                continue
            if path.startswith("/usr/share/doc/") and not path.endswith("/copyright"):
                continue
            rel = canonical(args.staging, path)
            if os.path.lexists(os.path.join(args.staging, rel)):
                copy_entry(args.staging, args.out, rel)
        status_dir = os.path.join(args.out, "var/lib/dpkg/status.d")
        os.makedirs(status_dir, exist_ok=True)
        with open(os.path.join(status_dir, name), "w", encoding="utf-8") as f:
            f.write(installed[name][0])
    print(" ".join(names))


if __name__ == "__main__":
    main()
