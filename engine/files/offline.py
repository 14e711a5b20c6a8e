"""File verbs on a disk with no VM: a stopped sandbox's chain or a snapshot's, read-only.

Only what a disk holds can come out of it: shells, services and secrets live in the running VM
and the engine's private files, never on the disk, so an export is the flattened chain and
nothing else (no memory image, device state or engine record is added).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.errors import GroveError
from engine.files.disk import EXPORT_FORMATS, DiskEntry, OfflineDisk, export, work_dir
from engine.files.limits import guest_path, read_size
from engine.files.live import Entry, ReadResult
from engine.images import disks
from engine.sandbox.phase import Phase
from engine.store.records import SandboxRecord, TemplateRecord

EXPORT_CHUNK = 256 * 1024
FORMATS = EXPORT_FORMATS
#: Phases whose disk no VM holds: stopped, or failed (its QEMU is gone; worth a post-mortem).
READABLE = frozenset({Phase.STOPPED, Phase.FAILED})


@dataclass(frozen=True, slots=True)
class ExportProgress:
    stage: str  # converting | header
    percent: float = 0.0
    format: str = ""
    size: int = 0
    virtual_size: int = 0


def _entry(found: DiskEntry) -> Entry:
    return Entry(found.path, found.type, found.size, found.mode, found.mtime, found.link_target)


class OfflineFiles:
    """tmp: the engine's scratch directory ($GROVE_HOME/tmp); every call works in its own
    tmp/disk-* directory, removed when the call ends."""

    def __init__(
        self,
        sandbox: Callable[[str], SandboxRecord],
        snapshot: Callable[[str], TemplateRecord],
        tmp: Path,
    ) -> None:
        self._sandbox = sandbox
        self._snapshot = snapshot
        self._tmp = tmp

    def resolve(self, target: str) -> Path:
        """A stopped sandbox (id or name) or a snapshot name -> the top of its disk chain."""
        if not target:
            raise GroveError(
                "invalid_argument", "no sandbox or snapshot given", "pass an ID or a snapshot NAME"
            )
        try:
            record = self._sandbox(target)
        except GroveError as exc:
            if not exc.code.endswith("not_found"):
                raise
            try:
                template = self._snapshot(target)
            except GroveError:
                raise GroveError(
                    "disk_not_found",
                    f"no stopped sandbox or snapshot named '{target}'",
                    "list them with 'grove sandbox ls' and 'grove snapshot ls'",
                ) from None
            return _present(Path(template.disk_path), f"snapshot {target}")
        if record.phase is Phase.TERMINATED:
            raise GroveError(
                "disk_gone",
                f"sandbox {record.id} is terminated; its disk is gone",
                "read a snapshot of it instead, if one was taken",
            )
        if record.phase not in READABLE:
            raise GroveError(
                "sandbox_running",
                f"sandbox {record.id} is {record.phase.value}; disk verbs read stopped disks",
                f"stop it first (grove sandbox stop {record.id}), or use 'grove file' while "
                "it runs",
            )
        return _present(Path(record.disk_path) if record.disk_path else None, record.id)

    async def list(self, target: str, path: str, recursive: bool = False) -> list[Entry]:
        path = guest_path(path)
        top = self.resolve(target)
        with _in_disk(target, path):
            async with await OfflineDisk.open(top, self._tmp) as disk:
                return [_entry(e) for e in await disk.list(path, recursive)]

    async def read(self, target: str, path: str, max_bytes: int = 0) -> ReadResult:
        path = guest_path(path)
        limit = read_size(max_bytes)
        top = self.resolve(target)
        with _in_disk(target, path):
            async with await OfflineDisk.open(top, self._tmp) as disk:
                found = await disk.read(path, limit)
        info = found.entry
        return ReadResult(found.data, info.size, found.truncated, info.mode, info.mtime)

    async def export(self, target: str, fmt: str) -> AsyncGenerator[ExportProgress | bytes, None]:
        """Progress while the chain is flattened, a header, then the image's bytes."""
        if fmt not in FORMATS:
            raise GroveError(
                "invalid_argument", f"invalid export format {fmt!r}", "use qcow2 or raw"
            )
        top = self.resolve(target)
        work = work_dir(self._tmp)
        out = work / f"disk.{fmt}"
        # Progress values, then None once the conversion has ended (however it ended).
        queue: asyncio.Queue[float | None] = asyncio.Queue()
        task = asyncio.create_task(export(top, fmt, out, queue.put_nowait))
        task.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (percent := await queue.get()) is not None:
                yield ExportProgress("converting", percent)
            task.result()
            size = out.stat().st_size
            virtual = await disks.virtual_size(top)
            yield ExportProgress("header", 100.0, fmt, size, virtual)
            with open(out, "rb") as f:
                while chunk := await asyncio.to_thread(f.read, EXPORT_CHUNK):
                    yield chunk
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            shutil.rmtree(work, ignore_errors=True)


def _present(disk: Path | None, owner: str) -> Path:
    if disk is None or not disk.is_file():
        raise GroveError(
            "disk_gone",
            f"the disk of {owner} is missing" + (f" ({disk})" if disk else ""),
            "the engine log (GROVE_HOME/engine.log) may say what removed it",
        )
    return disk


@contextlib.contextmanager
def _in_disk(target: str, path: str) -> Iterator[None]:
    """A path's errors, with remedies naming the disk verbs on this target."""
    try:
        yield
    except GroveError as exc:
        parent = path.rsplit("/", 1)[0] or "/"
        remedy = {
            "file_not_found": f"check the path with 'grove disk ls {target} {parent}'",
            "not_a_file": f"list it with 'grove disk ls {target} {path}'",
        }.get(exc.code)
        if remedy is None:
            raise
        raise GroveError(exc.code, f"{target}: {exc.message}", remedy) from None
