"""Environment templates: each (environment, size) is cold-booted once and frozen.

A template is a memory file, a device-state file and a disk. Sandboxes restore from it with
MAP_PRIVATE memory and their own disk overlay, so creating one costs a restore, not a boot.
The template's files are never written again while any sandbox depends on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from engine import crashpoints
from engine.config import Paths
from engine.errors import GroveError
from engine.images import disks
from engine.images.environments import EnvironmentImage, boot_args
from engine.store.db import Store
from engine.store.records import TemplatePhase, TemplateRecord
from engine.vmm import memfile
from engine.vmm.accel import Accelerator
from engine.vmm.vm import Vm, VmFiles, boot_spec

log = logging.getLogger(__name__)

# Cold boot under TCG takes ~5 s; allow for a loaded host.
AGENT_BOOT_TIMEOUT = 180.0
# Run in the booted guest before it is frozen: page cache and slabs go, free memory is compacted.
TRIM = "sync; echo 3 > /proc/sys/vm/drop_caches; echo 1 > /proc/sys/vm/compact_memory"

Progress = Callable[[str, float | None], None]


class Templates:
    def __init__(self, paths: Paths, store: Store, accel: Accelerator) -> None:
        self._paths = paths
        self._store = store
        self._accel = accel
        self._locks: dict[str, asyncio.Lock] = {}

    def template_id(self, image: EnvironmentImage, vcpus: int, mem_mib: int) -> str:
        # The CPU model is part of the frozen state: a template booted with other accelerator
        # arguments cannot be restored with these.
        # net=hub: booted with no network backend state in its snapshot (engine.net.inert).
        accel = " ".join(self._accel.qemu_args())
        key = f"{image.recipe_hash}:{vcpus}:{mem_mib}:{accel}:net=hub"
        return "tpl-" + hashlib.sha256(key.encode()).hexdigest()[:12]

    def usable(self, record: TemplateRecord | None) -> bool:
        return (
            record is not None
            and record.phase is TemplatePhase.READY
            and all(
                Path(p).exists() for p in (record.mem_path, record.state_path, record.disk_path)
            )
        )

    async def ensure(
        self, image: EnvironmentImage, vcpus: int, mem_mib: int, progress: Progress | None = None
    ) -> TemplateRecord:
        template_id = self.template_id(image, vcpus, mem_mib)
        lock = self._locks.setdefault(template_id, asyncio.Lock())
        async with lock:
            record = self._store.get_template(template_id)
            if self.usable(record):
                assert record is not None
                return record
            if record is not None:
                # Files lost (e.g. /dev/shm cleared by a host reboot): boot it again.
                self._store.delete_template(template_id)
            return await self._boot(template_id, image, vcpus, mem_mib, progress)

    async def _boot(
        self,
        template_id: str,
        image: EnvironmentImage,
        vcpus: int,
        mem_mib: int,
        progress: Progress | None,
    ) -> TemplateRecord:
        say = progress or (lambda _s, _f: None)
        tdir = self._paths.template_dir(template_id)
        shutil.rmtree(tdir, ignore_errors=True)
        tdir.mkdir(parents=True, mode=0o700)
        mem_path = self._paths.memory_dir / f"{template_id}.mem"
        mem_path.unlink(missing_ok=True)
        disk = tdir / "disk.qcow2"
        state = tdir / "state.bin"
        boot = boot_args(image, hostname="grove")
        record = TemplateRecord(
            id=template_id,
            kind="environment",
            environment=image.name,
            image_hash=image.recipe_hash,
            vcpus=vcpus,
            mem_mib=mem_mib,
            phase=TemplatePhase.BUILDING,
            mem_path=str(mem_path),
            state_path=str(state),
            disk_path=str(disk),
            created_at=time.time(),
            boot=boot,
        )
        self._store.insert_template(record)
        files = VmFiles(self._paths.socket_dir / template_id, tdir)
        vm: Vm | None = None
        try:
            await disks.create_overlay(disk, Path(image.rootfs))
            spec = boot_spec(
                self._accel, vcpus, mem_mib, mem_path, disk, files, boot,
                self._paths.vm_tag(template_id),
            )  # fmt: skip
            say(f"booting {image.name} once to make its template", None)
            started = time.monotonic()
            vm = await Vm.launch(spec, files)
            crashpoints.reached("template.spawned")
            agent = await vm.connect_agent(AGENT_BOOT_TIMEOUT)
            await agent.sync()
            boot_s = time.monotonic() - started
            say(f"agent ready after {boot_s:.1f} s; freezing the template", None)
            # What boot read is cache no sandbox needs: freed pages that were never written
            # stay zero and are dug out of the file below.
            await agent.run(["sh", "-c", TRIM], timeout_s=60)
            await vm.save(state)
            await vm.kill()
            vm = None
            await memfile.dig(mem_path)
            # Frozen from here on: children map it MAP_PRIVATE and read through to it.
            mem_path.chmod(0o400)
            disk.chmod(0o400)
            self._store.update_template(template_id, phase=TemplatePhase.READY)
            record.phase = TemplatePhase.READY
            log.info("template %s ready (boot %.1f s)", template_id, boot_s)
            return record
        except BaseException as exc:
            if vm is not None:
                await vm.kill()
            kept = self._keep_logs(template_id, files)
            self._store.delete_template(template_id)
            shutil.rmtree(tdir, ignore_errors=True)
            mem_path.unlink(missing_ok=True)
            if isinstance(exc, Exception):
                message = exc.message if isinstance(exc, GroveError) else str(exc)
                raise GroveError(
                    "template_boot_failed",
                    f"booting {image.name} failed: {message}",
                    f"see the guest console in {kept}; run 'grove doctor'",
                ) from exc
            raise

    def _keep_logs(self, template_id: str, files: VmFiles) -> Path:
        """A failed boot's console is the only clue to why: keep it outside the doomed dir."""
        logs = self._paths.home / "logs"
        logs.mkdir(exist_ok=True)
        kept = logs / f"{template_id}.console.log"
        with contextlib.suppress(OSError):
            shutil.copyfile(files.console, kept)
        with contextlib.suppress(OSError):
            shutil.copyfile(files.qemu_log, logs / f"{template_id}.qemu.log")
        return kept

    def remove(self, record: TemplateRecord) -> None:
        with contextlib.suppress(OSError):
            Path(record.mem_path).unlink(missing_ok=True)
        shutil.rmtree(self._paths.template_dir(record.id), ignore_errors=True)
        self._store.delete_template(record.id)
