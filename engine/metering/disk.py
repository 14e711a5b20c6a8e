"""Disk usage of a sandbox: its own qcow2 overlay and the frozen backing chain beneath it.

Sizes are allocated bytes (st_blocks * 512), the space the file really takes on the host, not
its apparent or virtual size. The backing chain is read from the qcow2 headers directly, so a
sample costs a few stat() calls and no qemu-img process.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

_QCOW2_MAGIC = b"QFI\xfb"
_HEADER = struct.Struct(">4sIQI")  # magic, version, backing_file_offset, backing_file_size
_MAX_DEPTH = 256  # a loop or a corrupt header must not hang the sampler
_MAX_NAME = 4096

FileKey = tuple[int, int]  # (st_dev, st_ino): hard-linked layers are one file


@dataclass(frozen=True, slots=True)
class Layer:
    path: str
    key: FileKey
    allocated_bytes: int


def allocated(st: os.stat_result) -> int:
    return st.st_blocks * 512


def backing_file(path: str) -> str | None:
    """The backing file named in a qcow2 header, made absolute; None for a base image."""
    with open(path, "rb") as f:
        head = f.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return None
        magic, _version, offset, size = _HEADER.unpack(head)
        if magic != _QCOW2_MAGIC or offset == 0 or size == 0 or size > _MAX_NAME:
            return None
        f.seek(offset)
        name = f.read(size).decode("utf-8", "surrogateescape")
    if name.startswith("json:") or ":" in name.split("/", 1)[0]:
        # A protocol (nbd:, json:{...}) is not a local file we can measure.
        raise ValueError(f"backing file of {path} is not a local file: {name}")
    # qemu resolves a relative backing name against the directory of the image naming it.
    return os.path.normpath(os.path.join(os.path.dirname(path), name))


class ChainReader:
    """Backing chains with their headers cached per file version (a frozen layer never changes)."""

    def __init__(self) -> None:
        self._backing: dict[FileKey, tuple[int, str | None]] = {}

    def chain(self, top: str) -> tuple[Layer, list[Layer]]:
        """(the top layer, its backing layers from nearest to base). Raises OSError/ValueError."""
        st = os.stat(top)
        first = Layer(top, (st.st_dev, st.st_ino), allocated(st))
        layers: list[Layer] = []
        seen = {first.key}
        path, key, mtime = top, first.key, st.st_mtime_ns
        for _ in range(_MAX_DEPTH):
            nxt = self._next(path, key, mtime)
            if nxt is None:
                return first, layers
            st = os.stat(nxt)
            key = (st.st_dev, st.st_ino)
            if key in seen:
                raise ValueError(f"backing chain of {top} loops at {nxt}")
            seen.add(key)
            layers.append(Layer(nxt, key, allocated(st)))
            path, mtime = nxt, st.st_mtime_ns
        raise ValueError(f"backing chain of {top} is deeper than {_MAX_DEPTH}")

    def _next(self, path: str, key: FileKey, mtime: int) -> str | None:
        # Re-read when the file changed since: a header rewrite (rebase, commit) changes mtime.
        cached = self._backing.get(key)
        if cached is None or cached[0] != mtime:
            cached = (mtime, backing_file(path))
            self._backing[key] = cached
        return cached[1]

    def forget(self, keep: set[FileKey]) -> None:
        for key in [k for k in self._backing if k not in keep]:
            del self._backing[key]
