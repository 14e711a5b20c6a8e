"""Guest memory files on tmpfs: created sparse, allocated in one call, zero pages given back."""

from __future__ import annotations

import asyncio
from pathlib import Path


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
