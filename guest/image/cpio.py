"""A minimal reader and writer for the "newc" cpio format the kernel unpacks as initramfs.

Written in Python so building an initramfs needs no root (device nodes are just headers)
and is reproducible (fixed owners, inode numbers and mtimes).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    name: str  # path without a leading slash, e.g. "bin/busybox"
    mode: int  # full st_mode: file type bits | permissions
    data: bytes = b""  # file contents, or the target of a symlink
    rdev: tuple[int, int] = (0, 0)  # (major, minor) for device nodes


def directory(name: str, perm: int = 0o755) -> Entry:
    return Entry(name, stat.S_IFDIR | perm)


def file(name: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(name, stat.S_IFREG | perm, data)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, stat.S_IFLNK | 0o777, target.encode())


def chardev(name: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    return Entry(name, stat.S_IFCHR | perm, rdev=(major, minor))


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(ino: int, entry: Entry, nlink: int, mtime: int) -> bytes:
    name = entry.name.encode() + b"\0"
    fields = (
        ino,
        entry.mode,
        0,
        0,
        nlink,
        mtime,
        len(entry.data),
        0,
        0,
        entry.rdev[0],
        entry.rdev[1],
        len(name),
        0,
    )
    head = _MAGIC + b"".join(b"%08X" % f for f in fields) + name
    return head + _pad(len(head))


def pack(entries: list[Entry], mtime: int = 0) -> bytes:
    """The archive bytes. Parents must precede children (the kernel creates in order)."""
    out = bytearray()
    for ino, entry in enumerate(entries, start=1):
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        out += _header(ino, entry, nlink, mtime)
        out += entry.data + _pad(len(entry.data))
    out += _header(0, Entry(_TRAILER, 0), 1, 0)
    return bytes(out)


def unpack(blob: bytes) -> list[Entry]:
    """Parse an archive written by ``pack`` (or any newc archive); stops at the trailer."""
    entries: list[Entry] = []
    pos = 0
    while pos + 110 <= len(blob):
        if blob[pos : pos + 6] != _MAGIC:
            raise ValueError(f"bad cpio magic at offset {pos}")
        f = [int(blob[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        pos += 110
        name = blob[pos : pos + namesize - 1].decode()
        pos += namesize + (-(110 + namesize) % 4)
        if name == _TRAILER:
            break
        data = blob[pos : pos + size]
        pos += size + (-size % 4)
        entries.append(Entry(name, mode, data, (rmaj, rmin)))
    return entries
