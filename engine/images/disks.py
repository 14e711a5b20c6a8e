"""qcow2 overlays: each sandbox writes only its own file on top of a frozen backing chain."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

from engine.errors import GroveError


async def _qemu_img(*args: str) -> bytes:
    try:
        proc = await asyncio.create_subprocess_exec(
            "qemu-img", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except FileNotFoundError:
        raise GroveError(
            "qemu_img_missing", "qemu-img is not installed", "apt-get install qemu-utils"
        ) from None
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise GroveError(
            "disk_failed",
            f"qemu-img {args[0]} failed: {err.decode(errors='replace').strip()}",
            "check free disk space under GROVE_HOME",
        )
    return out


async def create_overlay(path: Path, backing: Path, live: bool = False) -> None:
    """A new empty layer over backing.

    live: backing is still held read-write by a running VM (it is about to be frozen by a
    fork), so it must not be opened: its size is read with a shared lock and passed in.
    """
    backing = backing.absolute()
    if live:
        size = await virtual_size(backing)
        await _qemu_img(
            "create", "-q", "-f", "qcow2", "-F", "qcow2", "-u", "-b", str(backing), str(path),
            str(size),
        )  # fmt: skip
        return
    await _qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(backing), str(path))


async def overlays(paths: list[Path], backing: Path, live: bool = False) -> None:
    """Several empty layers over one backing file: qemu-img once, then plain file copies
    (an empty qcow2 overlay is a few hundred KiB of headers naming its backing file)."""
    if not paths:
        return
    await create_overlay(paths[0], backing, live=live)
    for path in paths[1:]:
        shutil.copyfile(paths[0], path)


async def overlay_from_seed(path: Path, backing: Path, seed: Path) -> None:
    """An empty layer over a frozen backing file, copied from a cached seed overlay."""
    if not seed.exists():
        tmp = seed.with_name(f".{seed.name}.{os.getpid()}.tmp")
        await create_overlay(tmp, backing)
        tmp.replace(seed)
    shutil.copyfile(seed, path)


async def virtual_size(path: Path) -> int:
    info = json.loads(await _qemu_img("info", "--output=json", "-U", str(path)))
    return int(info["virtual-size"])


async def allocated_bytes(path: Path) -> int:
    info = json.loads(await _qemu_img("info", "--output=json", "-U", str(path)))
    return int(info["actual-size"])
