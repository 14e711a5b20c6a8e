"""Warm sandboxes: one restore of each template, already running and warmed up.

Under emulation most of a create is one-time work in a fresh QEMU: starting it, loading the
state, and translating the guest code of the agent's first replies and first command (the
first exec in a new restore costs ~3x a later one). A warm VM has done all of that before
anyone asks. Claiming it renames its socket and log directories into the new sandbox's place
(bound unix sockets and open log files survive a rename); the sandbox then gets its own
identity (RNG reseed, clock, hostname) as every restore does. One warm VM costs what an idle
sandbox costs (~40 MiB, a few % of a core under TCG); GROVE_POOL_SIZE=0 turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from engine import crashpoints
from engine.config import Paths
from engine.images import disks
from engine.net.networks import Networks
from engine.store.records import TemplatePhase, TemplateRecord
from engine.vmm import cmdline
from engine.vmm.accel import Accelerator
from engine.vmm.vm import Vm, VmFiles

log = logging.getLogger(__name__)

POOL_PREFIX = "pool-"
# A warm-up is bounded: a restore that cannot finish fails within these, and waits for events
# rather than polling, so a failure costs little CPU.
WARM_RESTORE_TIMEOUT = 20.0
WARM_AGENT_TIMEOUT = 30.0
REFILL_DELAY_S = 3.0
# After a failed warm-up the next try for that template waits, doubling up to the maximum.
BACKOFF_FIRST_S = 10.0
BACKOFF_MAX_S = 600.0


def restorable(template: TemplateRecord) -> bool:
    """Only a finished template can be restored from: one still being captured has no state."""
    return template.phase is TemplatePhase.READY and bool(template.state_path)


def restore_spec(accel: Accelerator, template: TemplateRecord, files: VmFiles,
                 disk: Path, tag: str) -> cmdline.VmSpec:  # fmt: skip
    """The command line of any VM restored from template: memory MAP_PRIVATE over its file."""
    return cmdline.VmSpec(
        accel=accel,
        vcpus=template.vcpus,
        mem_mib=template.mem_mib,
        mem_path=Path(template.mem_path),
        mem_shared=False,
        disk=disk,
        qmp_socket=files.qmp,
        ctl_socket=files.ctl,
        console_log=files.console,
        kernel=Path(template.boot["kernel"]),
        initrd=Path(template.boot["initrd"]),
        append=template.boot["append"],
        incoming=True,
        tag=tag,
    )


@dataclass
class Warm:
    vm: Vm
    disk: Path
    template_id: str


class WarmPool:
    def __init__(
        self, paths: Paths, accel: Accelerator, networks: Networks, size: int | None = None
    ) -> None:
        self._networks = networks
        self._paths = paths
        self._accel = accel
        self.size = size if size is not None else int(os.environ.get("GROVE_POOL_SIZE", "1"))
        self._warm: dict[str, list[Warm]] = {}
        self._filling: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # template id -> (failures so far, loop time before which no new try starts)
        self._backoff: dict[str, tuple[int, float]] = {}

    def take(self, template_id: str) -> Warm | None:
        ready = self._warm.get(template_id) or []
        while ready:
            warm = ready.pop()
            if warm.vm.process.alive() and warm.vm.agent is not None and warm.vm.agent.connected:
                warm.vm.process.set_background(False)
                return warm
            task = asyncio.create_task(self._discard(warm))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return None

    def refill(self, template: TemplateRecord) -> None:
        if self.size <= 0 or template.id in self._filling:
            return
        if not restorable(template):
            log.error("not warming %s: it is %s, not ready", template.id, template.phase)
            return
        if len(self._warm.get(template.id, [])) >= self.size:
            return
        _, not_before = self._backoff.get(template.id, (0, 0.0))
        if asyncio.get_running_loop().time() < not_before:
            return
        task = asyncio.create_task(self._fill(template))
        self._filling[template.id] = task
        task.add_done_callback(lambda _t: self._filling.pop(template.id, None))

    async def _fill(self, template: TemplateRecord) -> None:
        # Warming a VM takes a core for a few hundred ms: let the sandbox just handed out run
        # its first commands first.
        await asyncio.sleep(REFILL_DELAY_S)
        while len(self._warm.setdefault(template.id, [])) < self.size:
            try:
                warm = await self._launch(template)
            except Exception as exc:  # a failed warm-up only costs the next create speed
                failures = self._backoff.get(template.id, (0, 0.0))[0] + 1
                wait = min(BACKOFF_FIRST_S * 2 ** (failures - 1), BACKOFF_MAX_S)
                self._backoff[template.id] = (failures, asyncio.get_running_loop().time() + wait)
                log.warning("could not pre-start a VM for %s: %s (next try in %.0f s)",
                            template.id, exc, wait)  # fmt: skip
                return
            self._backoff.pop(template.id, None)
            self._warm[template.id].append(warm)

    async def _launch(self, template: TemplateRecord) -> Warm:
        token = POOL_PREFIX + secrets.token_hex(4)
        files = VmFiles(self._paths.socket_dir / token, self._paths.home / "pool" / token)
        files.prepare()
        disk = self._paths.disks / f"{token}.qcow2"
        seed = self._paths.template_dir(template.id) / "empty-overlay.qcow2"
        await disks.overlay_from_seed(disk, Path(template.disk_path), seed)
        vm: Vm | None = None
        try:
            spec = restore_spec(self._accel, template, files, disk, self._paths.vm_tag(token))
            # The default policy: a claim changes it in place (namespaces) or, in user mode,
            # only takes this VM when the policy fits (Networks.pool_fits).
            net = await self._networks.attach(token, self._networks.default_policy)
            vm = await Vm.launch(spec, files, background=True, net=net)
            crashpoints.reached("pool.spawned")
            await vm.restore(Path(template.state_path), WARM_RESTORE_TIMEOUT)
            agent = await vm.connect_agent(WARM_AGENT_TIMEOUT)
            # Rehearse what a claim runs (the identity step and its file writes, then a
            # command), so the claim finds that guest code translated already.
            await agent.restore_identity(os.urandom(64), time.time_ns(), token)
            for _ in range(2):
                await agent.run(["true"])
            crashpoints.reached("pool.warm")
        except BaseException:
            if vm is not None:
                await vm.kill()
            disk.unlink(missing_ok=True)
            shutil.rmtree(files.log_dir, ignore_errors=True)
            raise
        return Warm(vm, disk, template.id)

    def forget(self, template_id: str) -> list[Warm]:
        return self._warm.pop(template_id, [])

    async def drop(self, template_id: str) -> None:
        """A template is going away: its warm targets map its memory file, end them."""
        task = self._filling.pop(template_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for warm in self.forget(template_id):
            await self._discard(warm)

    async def _discard(self, warm: Warm) -> None:
        await warm.vm.kill()
        warm.disk.unlink(missing_ok=True)
        shutil.rmtree(warm.vm.files.log_dir, ignore_errors=True)

    async def close(self) -> None:
        for template_id in list(self._warm) + list(self._filling):
            await self.drop(template_id)
