"""Capture a running sandbox as a frozen template, keeping the sandbox running.

The source's RAM is private (MAP_PRIVATE over its own template). Either of two layouts holds
the capture (transaction.py picks one per fork):

- *delta*: the template maps the source's own memory file, and its state stream carries only
  the pages the source wrote (engine.fork.delta). Nothing new is shared; each child holds
  those pages privately.
- *full*: the source's memory is copied into a new shareable file. A *loader* QEMU, started
  paused on that new file, receives a full migration; it never runs a vCPU, writes its device
  state (RAM excluded, since it already sits in the file) and exits.

Either way the source is paused only for the copy and then continues in the same process, and
its disk layer is frozen at the same instant with blockdev-snapshot-sync, so memory and disk of
the template describe one moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import crashpoints
from engine.config import Paths
from engine.fork import delta
from engine.metering import pagemap
from engine.net.network import Network
from engine.store.records import SandboxRecord, TemplatePhase, TemplateRecord
from engine.vmm import cmdline, memfile
from engine.vmm.accel import Accelerator
from engine.vmm.vm import Vm, VmFiles

log = logging.getLogger(__name__)

# The guest RAM block's idstr in a migration stream: the memory backend's id (cmdline.build).
GUEST_RAM_BLOCK = "mem"


@dataclass(frozen=True)
class Captured:
    template: TemplateRecord
    paused_ms: float
    total_ms: float


def new_template_id() -> str:
    return "snap-" + secrets.token_hex(5)


@dataclass
class Loader:
    """A paused QEMU holding a new memory file, listening for a source's full-RAM copy."""

    template_id: str
    mem: Path
    vm: Vm
    channel: Path
    key: tuple[int, int, str, str, str]


def loader_key(source: SandboxRecord) -> tuple[int, int, str, str, str]:
    """Loaders are interchangeable between sources of the same size and boot command line."""
    boot = source.boot
    return (source.vcpus, source.mem_mib, boot.get("kernel", ""), boot.get("initrd", ""),
            boot.get("append", ""))  # fmt: skip


async def start_loader(
    paths: Paths,
    accel: Accelerator,
    source: SandboxRecord,
    net: Network,
    template_id: str = "",
    background: bool = False,
) -> Loader:
    template_id = template_id or new_template_id()
    boot = dict(source.boot)
    tdir = paths.template_dir(template_id)
    tdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    mem = paths.memory_dir / f"{template_id}.mem"
    if not mem.exists():  # restore targets may already map it: never recreate it under them
        memfile.prepare(mem, source.mem_mib)
    files = VmFiles(paths.socket_dir / f"{template_id}-ld", tdir)
    spec = cmdline.VmSpec(
        accel=accel,
        vcpus=source.vcpus,
        mem_mib=source.mem_mib,
        mem_path=mem,
        mem_shared=True,
        disk=None,
        qmp_socket=files.qmp,
        ctl_socket=files.ctl,
        console_log=tdir / "loader-console.log",
        kernel=Path(boot["kernel"]),
        initrd=Path(boot["initrd"]),
        append=boot["append"],
        incoming=True,
        start_paused=True,
        # Allocating 512 MiB of tmpfs pages is slow on nested hosts; do it before the source
        # pauses, not while it waits (a copy into a sparse file paused it ~330 ms, not ~180).
        # Zero pages are given back afterwards (memfile.dig).
        prealloc=True,
        tag=paths.vm_tag(f"{template_id}-ld"),
    )
    vm = await Vm.launch(spec, files, background=background, net=net)
    try:
        channel = files.sock_dir / "mig.sock"
        await vm.migrate_in(f"unix:{channel}", ignore_shared=False)
        await _wait_for_socket(channel)
    except BaseException:
        await discard_loader(paths, Loader(template_id, mem, vm, channel, loader_key(source)))
        raise
    return Loader(template_id, mem, vm, channel, loader_key(source))


async def discard_loader(paths: Paths, loader: Loader) -> None:
    await loader.vm.kill()
    loader.mem.unlink(missing_ok=True)
    shutil.rmtree(paths.template_dir(loader.template_id), ignore_errors=True)


async def capture(
    *,
    paths: Paths,
    loader: Loader,
    source: SandboxRecord,
    source_vm: Vm,
    name: str | None,
    on_paused: Callable[[Path], None],
    on_resumed: Callable[[], None],
) -> Captured:
    """Copy the running source into the loader's new memory file and freeze its disk.

    on_paused(new_top) runs while the source is stopped, once its disk writes to new_top;
    on_resumed() once it runs again (also after a failure)."""
    started = time.monotonic()
    tdir = paths.template_dir(loader.template_id)
    state = tdir / "state.bin"
    frozen_disk, disk_parent = _frozen_layers(source)
    try:
        channel = f"unix:{loader.channel}"
        paused_ms = await _pause_and_copy(
            paths, source, source_vm, lambda: source_vm.migrate_out(channel, False), on_paused,
            on_resumed,
        )  # fmt: skip
        await loader.vm.wait_incoming()
        tmp = state.with_suffix(".tmp")
        await loader.vm.migrate_out(f"exec:cat > {tmp}", ignore_shared=True)
        tmp.rename(state)
        crashpoints.reached("capture.state_written")
    finally:
        await loader.vm.kill()
        with contextlib.suppress(OSError):
            (tdir / "loader-console.log").unlink()
    record = _record(loader.template_id, source, name, loader.mem, state, frozen_disk, disk_parent,
                     None)  # fmt: skip
    return _captured(record, paused_ms, started)


async def capture_delta(
    *,
    paths: Paths,
    template_id: str,
    source: SandboxRecord,
    source_vm: Vm,
    mem_base: str,
    name: str | None,
    on_paused: Callable[[Path], None],
    on_resumed: Callable[[], None],
) -> Captured:
    """Capture the running source as a delta over the memory file it maps (engine.fork.delta):
    no new memory file, a state stream with only the pages the source wrote. Raises
    delta.StreamError (the source running again) if the stream cannot be reduced."""
    started = time.monotonic()
    tdir = paths.template_dir(template_id)
    tdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # The reduced state holds the source's own RAM pages: it stays on tmpfs with the memory
    # files (guest RAM, secrets included, never reaches a disk).
    raw, state = paths.delta_stream(template_id), paths.delta_state(template_id)
    frozen_disk, disk_parent = _frozen_layers(source)
    private: list[bytearray] = []

    def while_paused() -> None:
        # Read in the pause, so it describes the very pages the stream holds.
        private.append(pagemap.private_pages(source_vm.pid, source.mem_path, source.mem_mib << 8))

    try:
        paused_ms = await _pause_and_copy(
            paths, source, source_vm, lambda: source_vm.migrate_to_file(raw, True), on_paused,
            on_resumed, while_paused,
        )  # fmt: skip
        tmp = state.with_suffix(".tmp")
        reduced = await asyncio.to_thread(delta.reduce, raw, tmp, GUEST_RAM_BLOCK, private[0])
        tmp.rename(state)
        crashpoints.reached("capture.state_written")
    finally:
        raw.unlink(missing_ok=True)
        state.with_suffix(".tmp").unlink(missing_ok=True)
    log.info("delta of %s: %d pages of its own, %d read from %s; state %.1f MiB",
             source.id, reduced.kept_pages, reduced.dropped_pages, Path(source.mem_path).name,
             reduced.bytes_out / 2**20)  # fmt: skip
    record = _record(template_id, source, name, Path(source.mem_path), state, frozen_disk,
                     disk_parent, mem_base)  # fmt: skip
    return _captured(record, paused_ms, started)


async def _pause_and_copy(
    paths: Paths,
    source: SandboxRecord,
    source_vm: Vm,
    copy: Callable[[], Awaitable[None]],
    on_paused: Callable[[Path], None],
    on_resumed: Callable[[], None],
    while_paused: Callable[[], None] = lambda: None,
) -> float:
    """Stop the source, freeze its disk on a new top layer, copy it (a migration), resume it
    (whatever happened); return how long the guest was stopped."""
    new_top = paths.disks / f"{source.id}-{secrets.token_hex(3)}.qcow2"
    stopped = source_vm.qmp.subscribe(_event("STOP"))
    resumed = source_vm.qmp.subscribe(_event("RESUME"))
    pause_started = time.monotonic()
    try:
        # Stop-and-copy: the guest stays stopped for the whole RAM copy. A live pre-copy
        # (pause-before-switchover) paused it for ~20 ms instead, but under TCG its
        # children of a source busy writing memory crashed on corrupt pages (see
        # test_forks_of_a_source_busy_writing_memory_are_consistent), so it is not used.
        await source_vm.quiesce_and_stop()
        crashpoints.reached("capture.paused")
        await source_vm.freeze_disk(new_top)
        on_paused(new_top)
        crashpoints.reached("capture.disk_frozen")
        await copy()
        while_paused()
        crashpoints.reached("capture.migrated")
    except BaseException as exc:
        log.warning("capture of %s failed: %s", source.id, exc)
        with contextlib.suppress(Exception):
            await source_vm.qmp.execute("migrate_cancel")
        raise
    finally:
        # The source always resumes, whatever happened to the copy.
        await source_vm.resume_after_migration()
        paused_ms = await _paused_ms(stopped, resumed, pause_started)
        stopped.cancel()
        resumed.cancel()
        on_resumed()
    crashpoints.reached("capture.resumed")
    return paused_ms


def _frozen_layers(source: SandboxRecord) -> tuple[Path, str | None]:
    """The disk layer a capture freezes and the layer under it, read before the freeze moves
    the source on to a new top."""
    return Path(source.disk_path), source.disk_base or source.template_id or None


def _record(
    template_id: str,
    source: SandboxRecord,
    name: str | None,
    mem: Path,
    state: Path,
    frozen_disk: Path,
    disk_parent: str | None,
    mem_base: str | None,
) -> TemplateRecord:
    return TemplateRecord(
        id=template_id,
        kind="snapshot",
        environment=source.environment,
        image_hash=source.image_hash,
        vcpus=source.vcpus,
        mem_mib=source.mem_mib,
        phase=TemplatePhase.READY,
        mem_path=str(mem),
        state_path=str(state),
        disk_path=str(frozen_disk),
        created_at=time.time(),
        parent_id=disk_parent,
        source_sandbox=source.id,
        name=name,
        boot=dict(source.boot),
        mem_base=mem_base,
    )


def _captured(record: TemplateRecord, paused_ms: float, started: float) -> Captured:
    total_ms = (time.monotonic() - started) * 1000
    log.info("captured %s as %s: paused %.0f ms, total %.0f ms", record.source_sandbox,
             record.id, paused_ms, total_ms)  # fmt: skip
    return Captured(record, paused_ms, total_ms)


async def _paused_ms(
    stopped: asyncio.Future[Any], resumed: asyncio.Future[Any], fallback_started: float
) -> float:
    """How long the guest was stopped, from QEMU's own STOP and RESUME event timestamps (our
    clock would add the monitor's round trips); our clock if an event does not come."""
    fallback = (time.monotonic() - fallback_started) * 1000
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.gather(stopped, resumed), 1.0)
        return (_stamp(resumed.result()) - _stamp(stopped.result())) * 1000
    return fallback


def _stamp(event: dict[str, Any]) -> float:
    stamp = event.get("timestamp", {})
    return float(stamp.get("seconds", 0)) + float(stamp.get("microseconds", 0)) / 1e6


def _event(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda message: message.get("event") == name


async def _wait_for_socket(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"loader did not open {path}")
        await asyncio.sleep(0.001)
