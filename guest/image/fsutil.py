"""Filesystem helpers: sizes, and removing build trees that may still have mounts inside."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below ``path``, deepest first (the order to unmount them)."""
    root = os.path.realpath(path)
    found: list[Path] = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        # Field 5 is the mount point, with spaces and the like octal-escaped.
        point = line.split()[4].encode().decode("unicode_escape")
        if point == root or point.startswith(root + "/"):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def remove_tree(path: Path) -> None:
    """Delete ``path`` after detaching any mounts left inside (e.g. a killed debootstrap's /proc).

    Refuses to delete if a mount cannot be detached: rmtree must never descend into /proc,
    /sys or a bind-mounted host directory.
    """
    if not path.exists() and not path.is_symlink():
        return
    for point in mounts_under(path):
        subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)
    left = mounts_under(path)
    if left:
        raise OSError(f"cannot remove {path}: still mounted at {left[0]}")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def disk_usage(path: Path) -> int:
    """Bytes allocated by the files under ``path`` (sparse files count what they store)."""
    if path.is_file():
        return path.stat().st_blocks * 512
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            total += st.st_blocks * 512
    return total
