"""Restoring a sandbox from a frozen template: a QEMU waiting for state, then a guest that runs
with its own identity. Create, reset and fork children all come up this way."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from pathlib import Path
from secrets import token_hex

from engine import crashpoints
from engine.agent.client import AgentClient, AgentError
from engine.config import Paths
from engine.errors import GroveError
from engine.images import disks
from engine.net.networks import Networks
from engine.sandbox import pool
from engine.sandbox.phase import Phase
from engine.sandbox.vms import SandboxVms
from engine.store.db import Store
from engine.store.records import SandboxRecord, TemplateRecord
from engine.vmm.accel import Accelerator
from engine.vmm.vm import Vm, VmFiles

log = logging.getLogger(__name__)

# A restored guest has its agent already running: it answers within milliseconds.
AGENT_RESTORE_TIMEOUT = 30.0


class Restorer:
    def __init__(
        self,
        paths: Paths,
        store: Store,
        accel: Accelerator,
        vms: SandboxVms,
        warm: pool.WarmPool,
        networks: Networks,
    ) -> None:
        self._networks = networks
        self._paths = paths
        self._store = store
        self._accel = accel
        self._vms = vms
        self._pool = warm

    def new_disk(self, sandbox_id: str) -> Path:
        return self._paths.disks / f"{sandbox_id}-{token_hex(3)}.qcow2"

    async def launch_target(
        self,
        record: SandboxRecord,
        template: TemplateRecord,
        backing: Path,
        disk: Path | None = None,
    ) -> Vm:
        """Start a QEMU waiting for a snapshot: memory MAP_PRIVATE over the template's file,
        a fresh disk layer over backing. Nothing runs until complete()."""
        files = self._vms.files(record.id)
        policy = self._networks.policy_of(record.network)
        # A restore from a finished template may take a warm VM and refills the pool; fork
        # children (given their disks) restore from a template still being captured.
        from_template = disk is None
        fits = self._networks.pool_fits(policy)
        warm = self._pool.take(template.id) if from_template and fits else None
        if warm is not None:
            vm = _claim(warm, files)
            disk = warm.disk
            self._vms.hold(record.id, vm)  # from here on its undo ends it with the sandbox
            vm.net.rename(record.id)
            await vm.net.apply(policy, await self._networks.pin(policy))
        else:
            if disk is None:
                disk = self.new_disk(record.id)
                seed = self._paths.template_dir(template.id) / "empty-overlay.qcow2"
                await disks.overlay_from_seed(disk, backing, seed)
                crashpoints.reached("create.disk_made")
            spec = pool.restore_spec(
                self._accel, template, files, disk, self._paths.vm_tag(record.id)
            )
            net = await self._networks.attach(record.id, policy)
            crashpoints.reached("create.network_made")
            vm = await Vm.launch(spec, files, net=net)
            crashpoints.reached("create.spawned")
        if from_template:
            self._pool.refill(template)
        self._vms.hold(record.id, vm)
        record.disk_path = str(disk)
        record.template_id = template.id
        record.boot = dict(template.boot)
        record.image_hash = template.image_hash
        self._store.update_sandbox(
            record.id,
            pid=vm.pid,
            pid_start=vm.process.start,
            mem_path=template.mem_path,
            disk_path=str(disk),
            template_id=template.id,
            boot=record.boot,
            image_hash=record.image_hash,
        )
        return vm

    async def complete(self, record: SandboxRecord, vm: Vm, state: Path) -> None:
        """Load the state, connect the agent, give the guest its own identity: running."""
        t0 = time.monotonic()
        if vm.agent is None:
            await vm.restore(state)
        crashpoints.reached("create.restored")
        restored = time.monotonic()
        # A warm pool VM was restored and connected ahead of time.
        agent = vm.agent or await vm.connect_agent(AGENT_RESTORE_TIMEOUT)
        connected = time.monotonic()
        await new_identity(record, agent)
        self._vms.set_phase(record, Phase.RUNNING, pid=vm.pid)
        self._vms.supervise(record.id, vm)
        log.info(
            "restored %s: restore=%.0f agent=%.0f identity=%.0f ms", record.id,
            (restored - t0) * 1000, (connected - restored) * 1000,
            (time.monotonic() - connected) * 1000,
        )  # fmt: skip

    async def restore(
        self, record: SandboxRecord, template: TemplateRecord, launched: str = ""
    ) -> None:
        """The whole restore of a finished template, with a new disk layer on its disk
        (launched: the crash point between starting the QEMU and loading its state)."""
        vm = await self.launch_target(record, template, Path(template.disk_path))
        if launched:
            crashpoints.reached(launched)
        record.disk_base = template.id
        record.origin = record.origin or template.id
        record.reset_to = None
        self._store.update_sandbox(
            record.id, disk_base=record.disk_base, origin=record.origin, reset_to=None
        )
        await self.complete(record, vm, Path(template.state_path))


def _claim(warm: pool.Warm, files: VmFiles) -> Vm:
    """Move a warm target into this sandbox's places; its sockets and logs stay open."""
    old = warm.vm.files
    files.sock_dir.parent.mkdir(parents=True, exist_ok=True)
    old.sock_dir.rename(files.sock_dir)
    files.log_dir.mkdir(parents=True, exist_ok=True)
    for name in (old.console.name, old.qemu_log.name):
        with contextlib.suppress(FileNotFoundError):
            (old.log_dir / name).replace(files.log_dir / name)
    shutil.rmtree(old.log_dir, ignore_errors=True)
    warm.vm.files = files
    return warm.vm


async def new_identity(record: SandboxRecord, agent: AgentClient) -> None:
    """A restored guest is a copy: reseed its RNG, step its clock, give it its own name."""
    try:
        reply = await agent.restore_identity(os.urandom(64), time.time_ns(), record.name)
    except AgentError as exc:
        reply = {"error": str(exc)}
    if not reply.get("reseeded"):
        log.warning("identity of %s not restored: %s", record.id, reply.get("error", reply))
        # Fail closed: two sandboxes must never share an RNG stream.
        raise GroveError(
            "reseed_failed",
            "the guest agent did not confirm reseeding its random number generator",
            "rebuild the environment with 'grove env pull --force ENV'",
        )
