"""What an engine home owns on the host, found without the store, and reaped when unclaimed.

Every QEMU the engine starts carries its home's tag and its owner's id on its command line
(``-name guest=grove.<home>.<owner>``), and every file it makes lives in one of the home's
directories, named after its owner. So after a crash, at any moment, the next engine can list
all of it from /proc and the directories alone and compare that with what the store claims:
whatever no record claims is reaped. This runs when nothing else is in flight: at engine start
after re-adoption, and at engine stop after every VM was stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import Paths
from engine.store.db import Store
from engine.vmm import cmdline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claims:
    """What the store (and the engine's live VMs) say this home owns."""

    pids: frozenset[int]
    files: frozenset[str]
    sandboxes: frozenset[str]
    templates: frozenset[str]


@dataclass
class Reaped:
    processes: list[int] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.processes or self.files)


def claims(store: Store, live_pids: set[int]) -> Claims:
    sandboxes = store.list_sandboxes(include_terminated=False)
    templates = store.list_templates()
    files = {r.disk_path for r in sandboxes} | {r.mem_path for r in sandboxes}
    files |= {t.disk_path for t in templates} | {t.mem_path for t in templates}
    files |= {t.state_path for t in templates}  # a delta's state is guest RAM, on tmpfs
    return Claims(
        pids=frozenset(live_pids),
        files=frozenset(f for f in files if f),
        sandboxes=frozenset(r.id for r in sandboxes),
        templates=frozenset(t.id for t in templates),
    )


def owned_qemus(paths: Paths) -> dict[int, str]:
    """pid -> owner of every QEMU of this home. Untagged ones (started before tags existed)
    are recognised by the home's socket directory on their command line."""
    prefix = paths.vm_tag_prefix
    legacy = str(paths.socket_dir) + "/"
    found: dict[int, str] = {}
    for pid, argv in cmdline.qemu_cmdlines().items():
        tag = cmdline.tag_of(argv)
        if tag.startswith(prefix):
            found[pid] = tag.removeprefix(prefix)
        elif not tag and any(legacy in a for a in argv):
            found[pid] = "?"
    return found


async def reap(paths: Paths, claimed: Claims) -> Reaped:
    reaped = Reaped()
    for pid, owner in owned_qemus(paths).items():
        if pid in claimed.pids:
            continue
        if await _kill(pid):
            reaped.processes.append(pid)
            log.info("reaped QEMU %d (owner %s): no record claims it", pid, owner)
    for directory in (paths.disks, paths.memory_dir):
        for path in _entries(directory):
            if str(path) not in claimed.files and path.is_file():
                path.unlink(missing_ok=True)
                reaped.files.append(str(path))
    for sock_dir in _entries(paths.socket_dir):
        if sock_dir.is_dir() and sock_dir.name not in claimed.sandboxes:
            shutil.rmtree(sock_dir, ignore_errors=True)
    for tdir in _entries(paths.templates):
        if tdir.is_dir() and tdir.name not in claimed.templates:
            shutil.rmtree(tdir, ignore_errors=True)
            reaped.files.append(str(tdir))
    for sdir in _entries(paths.sandboxes):
        if sdir.is_dir() and sdir.name not in claimed.sandboxes:
            shutil.rmtree(sdir, ignore_errors=True)
            reaped.files.append(str(sdir))
    for scratch in (paths.home / "pool", paths.home / "tmp"):
        shutil.rmtree(scratch, ignore_errors=True)
    if reaped.files:
        log.info("reaped %d files no record claims: %s", len(reaped.files),
                 ", ".join(Path(f).name for f in reaped.files[:8]))  # fmt: skip
    return reaped


def _entries(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except OSError:
        return []


async def _kill(pid: int, timeout: float = 5.0) -> bool:
    """SIGKILL through a pidfd (immune to pid reuse) and wait until the process is gone."""
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return False
    try:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while Path(f"/proc/{pid}").exists() and _state(pid) != "Z" and loop.time() < deadline:
            await asyncio.sleep(0.02)
    finally:
        os.close(fd)
    return True


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2 :].split()[0]
