"""Guest memory files on tmpfs: created sparse, allocated in one call, zero pages given back."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
from pathlib import Path

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(None, use_errno=True)


def prepare(path: Path, mem_mib: int) -> None:
    """Create the (sparse) memory file up front so restore targets can map it before it fills."""
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        f.truncate(mem_mib << 20)


def allocated(path: Path) -> int:
    """Bytes of the file that hold pages (its holes hold none)."""
    try:
        return path.stat().st_blocks * 512
    except FileNotFoundError:
        return 0


def holes(path: Path) -> list[tuple[int, int]]:
    """(offset, length) of each hole in the file, from SEEK_HOLE/SEEK_DATA (no page read)."""
    found: list[tuple[int, int]] = []
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            hole = os.lseek(fd, offset, os.SEEK_HOLE)
            if hole >= size:
                break
            try:
                data = os.lseek(fd, hole, os.SEEK_DATA)
            except OSError as exc:  # ENXIO: a hole up to the end
                if exc.errno != errno.ENXIO:
                    raise
                data = size
            found.append((hole, data - hole))
            offset = data
    finally:
        os.close(fd)
    return found


def punch(path: Path, ranges: list[tuple[int, int]]) -> None:
    """Give back the pages of the given ranges (known to hold zeros) without reading them."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)  # as fallocate(1): punching needs write
    try:
        for offset, length in ranges:
            if _libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                               ctypes.c_long(offset), ctypes.c_long(length)) != 0:  # fmt: skip
                err = ctypes.get_errno()
                raise OSError(err, f"punch {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


async def fill(path: Path) -> None:
    """Allocate a file's holes in one call ahead of a full-RAM copy that reads or writes every
    page (faulting 128k pages in one by one is several times slower on a nested host)."""
    proc = await asyncio.create_subprocess_exec(
        "fallocate", "-l", str(path.stat().st_size), str(path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await proc.wait()


async def dig(path: Path) -> None:
    """Give back a file's zero pages (safe while restores map it MAP_PRIVATE)."""
    # At idle priority: it reads the whole file, and no sandbox in use should wait for that.
    proc = await asyncio.create_subprocess_exec(
        "chrt", "--idle", "0", "fallocate", "-d", str(path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await proc.wait()
