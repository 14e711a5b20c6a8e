"""The rootfs layer: debootstrap a Debian tree, trim it, and ship it as a small qcow2.

The tree becomes an ext4 image with ``mkfs.ext4 -d`` (no loop mounts, no root-only mount
calls beyond debootstrap's own), on a sparse file whose zeros ``qemu-img convert`` drops.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path

from guest.image.errors import ImageBuildError
from guest.image.fsutil import disk_usage, remove_tree
from guest.image.hosttools import require, run
from guest.image.mirror import MIRROR_ENV, check_reachable, find_mirror
from guest.image.recipes import EnvironmentRecipe

Progress = Callable[[str, float | None], None]

ROOTFS = "rootfs.qcow2"
PACKAGES = "packages.txt"
BOOTSTRAP_LOG = "debootstrap.log"
MIB = 1 << 20

# Trimmed after bootstrap: documentation, translations and apt's caches (apt-get update
# restores the lists in a sandbox that needs them). Copyright files stay.
_TRIM_GLOBS = (
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/lintian/*",
    "usr/share/linda/*",
    "var/lib/apt/lists/*",
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/cache/debconf/*-old",
    "var/lib/dpkg/*-old",
    "debootstrap",
)
# Keep future `apt-get install` in a sandbox from bringing the docs back.
_DPKG_NODOC = """\
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
"""
_NETWORK_ERRORS = re.compile(
    r"Failed getting release file|Couldn't download|Temporary failure resolving|"
    r"unable to resolve host|Connection refused|Network is unreachable|Could not connect",
    re.IGNORECASE,
)
_STEP = re.compile(r"^I: (Retrieving|Extracting|Unpacking|Configuring) (?!the base system)(\S+)")


def _debootstrap(
    recipe: EnvironmentRecipe, mirror: str, target: Path, log: Path, progress: Progress
) -> None:
    argv = [
        require("debootstrap"),
        f"--variant={recipe.variant}",
        f"--include={','.join(recipe.packages)}",
        recipe.suite,
        str(target),
        mirror,
    ]
    progress(f"rootfs: debootstrap {recipe.suite} from {mirror}", None)
    tail: deque[str] = deque(maxlen=8)
    counts = {"Retrieving": 0, "Extracting": 0, "Unpacking": 0, "Configuring": 0}
    # Own process group: on any exception (Ctrl-C, a failing progress callback) the whole
    # tree (debootstrap, dpkg, chroot) is killed before the target directory is deleted.
    with (
        log.open("w") as out,
        subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "LC_ALL": "C"},
            start_new_session=True,
        ) as proc,
    ):
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                tail.append(line.rstrip())
                _report_step(line, counts, progress)
            code = proc.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if code != 0:
        detail = _failure_detail(target, tail)
        if _NETWORK_ERRORS.search(detail):
            raise ImageBuildError(
                f"debootstrap could not fetch from {mirror}: {detail}",
                f"check the network, or set {MIRROR_ENV} to a reachable Debian mirror",
            )
        raise ImageBuildError(
            f"debootstrap failed (exit {code}): {detail}",
            f"see {log}; fix the cause and rebuild with --force",
        )


def _report_step(line: str, counts: dict[str, int], progress: Progress) -> None:
    """Turn "I: Unpacking bash..." into progress; later steps walk the retrieved packages."""
    m = _STEP.match(line)
    if not m or m.group(1) not in counts:
        return
    step, package = m.group(1), m.group(2).rstrip(".")
    counts[step] += 1
    total = counts["Retrieving"]  # not known until retrieval ends
    fraction = None if step == "Retrieving" else min(1.0, counts[step] / max(total, 1))
    progress(f"rootfs: {step.lower()} {package}", fraction)


def _failure_detail(target: Path, tail: deque[str]) -> str:
    """The cause in one line: debootstrap's "E:" lines, else the end of its logs."""
    errors = [ln.strip() for ln in tail if ln.startswith("E:")]
    if errors:
        return " | ".join(errors[-2:])
    lines = [ln.strip() for ln in tail if ln.strip()][-2:]
    inner = target / "debootstrap" / "debootstrap.log"  # the failing dpkg/apt step is here
    if inner.is_file():
        lines += [ln.strip() for ln in inner.read_text(errors="replace").splitlines()[-3:]]
    return " | ".join(ln for ln in lines if ln) or "no output"


def _configure(root: Path, hostname: str = "grove") -> None:
    """Make the tree ours: root's shell, hostname, hosts, no docs on later installs."""
    passwd = root / "etc" / "passwd"
    lines = passwd.read_text().splitlines()
    lines = [
        ":".join([*ln.split(":")[:6], "/bin/bash"]) if ln.startswith("root:") else ln
        for ln in lines
    ]
    passwd.write_text("\n".join(lines) + "\n")
    # debootstrap copies the build host's name; the guest sets its own at boot.
    (root / "etc" / "hostname").write_text(f"{hostname}\n")
    (root / "etc" / "hosts").write_text(
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    )
    (root / "etc" / "resolv.conf").unlink(missing_ok=True)
    (root / "etc" / "resolv.conf").write_text("nameserver 10.0.2.3\n")
    (root / "etc" / "dpkg" / "dpkg.cfg.d" / "01-grove-nodoc").write_text(_DPKG_NODOC)


def _trim(root: Path) -> None:
    for pattern in _TRIM_GLOBS:
        for path in root.glob(pattern):
            remove_tree(path)
    doc = root / "usr" / "share" / "doc"
    for path in doc.glob("*/*") if doc.is_dir() else ():
        if path.name != "copyright":
            remove_tree(path)
    locale = root / "usr" / "share" / "locale"
    for path in locale.iterdir() if locale.is_dir() else ():
        if path.name != "locale.alias":
            remove_tree(path)
    for log in (root / "var" / "log").rglob("*"):
        if log.is_file():
            log.write_bytes(b"")  # keep files (and owners) that daemons expect; drop content


def _package_list(root: Path) -> str:
    return run(
        [
            "dpkg-query",
            f"--admindir={root / 'var/lib/dpkg'}",
            "-W",
            "-f",
            "${Package} ${Version}\n",
        ],
        what="listing installed packages",
    )


def _make_image(
    recipe: EnvironmentRecipe, root: Path, raw: Path, qcow2: Path, key: str, progress: Progress
) -> int:
    used = disk_usage(root)
    # Room for metadata and for the sandbox's own writes; the file is sparse either way.
    size = max(recipe.disk_size_mib * MIB, (used * 13 // 10 + 256 * MIB) // MIB * MIB)
    with raw.open("wb") as f:
        f.truncate(size)
    progress(f"rootfs: mkfs.ext4 ({used // MIB} MiB of files, {size // MIB} MiB disk)", None)
    # Fully initialised inode tables and journal: zeros cost nothing in the qcow2, while
    # lazy init would make every booted guest write them into its own overlay.
    fs_uuid = str(uuid.UUID(key[:32]))
    run(
        [
            require("mkfs.ext4"),
            "-q",
            "-F",
            "-L",
            "grove-root",
            "-U",
            fs_uuid,
            "-m",
            "0",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            "-d",
            str(root),
            str(raw),
        ],
        what="creating the ext4 filesystem",
        timeout=1800,
    )
    progress("rootfs: converting to qcow2", None)
    run(
        [require("qemu-img"), "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)],
        what="converting the disk to qcow2",
        timeout=1800,
    )
    return size


def build(
    recipe: EnvironmentRecipe, dest: Path, key: str, progress: Progress, log: Path | None = None
) -> dict[str, object]:
    """Write ``dest/rootfs.qcow2`` (and its package list); return manifest details.

    ``log`` receives debootstrap's output and must outlive ``dest`` (which is deleted when
    the build fails) so the error's remedy can point at it; a copy is kept in the layer.
    """
    if os.geteuid() != 0:
        raise ImageBuildError(
            "building a root filesystem needs root (debootstrap)",
            "run the build as root, e.g. sudo grove image build",
        )
    for tool in ("debootstrap", "mkfs.ext4", "qemu-img", "dpkg-query"):
        require(tool)
    mirror = find_mirror(recipe.suite)
    check_reachable(mirror, recipe.suite)
    root, raw = dest / "root", dest / "rootfs.raw"
    try:
        log = log or dest.parent / f"{BOOTSTRAP_LOG}.{key[:12]}"
        log.parent.mkdir(parents=True, exist_ok=True)
        _debootstrap(recipe, mirror, root, log, progress)
        shutil.copyfile(log, dest / BOOTSTRAP_LOG)
        progress("rootfs: trimming docs, locales and caches", None)
        _configure(root)
        _trim(root)
        packages = _package_list(root)
        (dest / PACKAGES).write_text(packages)
        size = _make_image(recipe, root, raw, dest / ROOTFS, key, progress)
        files_bytes = disk_usage(root)
    finally:
        remove_tree(root)
        remove_tree(raw)
    return {
        "mirror": mirror,
        "virtual_size": size,
        "files_bytes": files_bytes,
        "packages": len(packages.splitlines()),
    }


def verify(layer: Path) -> None:
    """Raise unless ``qemu-img check`` passes and the image really is qcow2."""
    image = layer / ROOTFS
    run(
        [require("qemu-img"), "check", "-q", "-f", "qcow2", str(image)],
        what="checking the rootfs image",
    )
    info = json.loads(
        run(
            [require("qemu-img"), "info", "--output=json", str(image)],
            what="inspecting the rootfs image",
        )
    )
    if info.get("format") != "qcow2":
        raise ImageBuildError(f"{image} is not qcow2", "rebuild with --force")
