"""Which filesystem holds a file: a guest-RAM file on tmpfs is host RAM, on disk it is not."""

from __future__ import annotations

import os

_RAM_FILESYSTEMS = frozenset({"tmpfs", "shmem", "ramfs", "hugetlbfs"})


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \\ooo octal.
    if "\\" not in field:
        return field
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and i + 4 <= len(field):
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts(mountinfo: str) -> list[tuple[str, str]]:
    """(mount point, filesystem type) pairs, in mount order."""
    found = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        found.append((_unescape(fields[4]), right.split()[0]))
    return found


class FilesystemTypes:
    """Filesystem type per directory, from /proc/self/mountinfo (re-read for new directories)."""

    def __init__(self) -> None:
        self._by_dir: dict[str, str] = {}

    def fstype(self, path: str) -> str:
        directory = os.path.dirname(os.path.realpath(path))
        kind = self._by_dir.get(directory)
        if kind is None:
            with open("/proc/self/mountinfo") as f:
                table = mounts(f.read())
            kind = "unknown"
            best = -1
            # The last mount on the longest matching prefix is the one that is visible.
            for point, fs in table:
                inside = directory == point or directory.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= best:
                    best, kind = len(point), fs
            self._by_dir[directory] = kind
        return kind

    def in_ram(self, path: str) -> bool:
        return self.fstype(path) in _RAM_FILESYSTEMS
