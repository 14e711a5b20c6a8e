"""Fork and snapshot as one transaction: explicit steps, each pushing its own undo.

A capture with N children (N = 0 for a named snapshot): child rows; a placeholder template row;
a loader; child QEMUs waiting for state (started while the source still runs); the source's
template holes filled; the capture itself (the source's short pause); the template made ready;
the children restored. A failure at any step runs the undos of the steps done, newest first,
and leaves the source running. A crash between steps is for recovery (see crashpoints.POINTS).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

from engine import crashpoints
from engine.agent.client import AgentError
from engine.config import Paths
from engine.errors import GroveError, invalid
from engine.fork import capture
from engine.fork.collector import Collector
from engine.fork.holes import Holes
from engine.fork.loaders import LoaderPool
from engine.images import disks
from engine.net.networks import Networks
from engine.sandbox import secrets
from engine.sandbox.events import EventLog
from engine.sandbox.naming import new_sandbox_id, validate_name
from engine.sandbox.phase import Phase
from engine.sandbox.restore import Restorer
from engine.sandbox.vms import SandboxVms
from engine.store.db import Store
from engine.store.records import SandboxRecord, TemplatePhase, TemplateRecord
from engine.vmm import memfile
from engine.vmm.accel import Accelerator
from engine.vmm.vm import Vm

MAX_REPLICAS = 64


@dataclass(frozen=True)
class Forked:
    source: SandboxRecord
    template: TemplateRecord
    children: list[SandboxRecord]
    paused_ms: float


class Forks:
    def __init__(
        self,
        paths: Paths,
        store: Store,
        accel: Accelerator,
        events: EventLog,
        vms: SandboxVms,
        restorer: Restorer,
        loaders: LoaderPool,
        holes: Holes,
        collector: Collector,
        networks: Networks,
    ) -> None:
        self._networks = networks
        self._paths = paths
        self._store = store
        self._accel = accel
        self._events = events
        self._vms = vms
        self._restorer = restorer
        self._loaders = loaders
        self._holes = holes
        self._collector = collector

    async def fork(
        self,
        ref: str,
        replicas: int = 1,
        name_prefix: str = "",
        allow_secrets: bool = False,
        network: str = "",
    ) -> Forked:
        """Fork a running sandbox into replicas children; the source keeps running."""
        if not 1 <= replicas <= MAX_REPLICAS:
            raise invalid(
                f"invalid replica count {replicas}", f"pass --replicas from 1 to {MAX_REPLICAS}"
            )
        if name_prefix:
            validate_name(f"{name_prefix}-{replicas}")
        # Validated before anything starts; empty: every child inherits the source's policy.
        child_network = str(self._networks.policy_of(network)) if network else ""
        return await self._capture(ref, replicas, name_prefix, None, allow_secrets, child_network)

    async def snapshot(self, ref: str, name: str) -> TemplateRecord:
        validate_name(name)
        if any(t.name == name for t in self._store.list_templates()):
            raise GroveError(
                "name_taken",
                f"a snapshot named '{name}' already exists",
                "choose another name or remove it with 'grove snapshot rm NAME'",
            )
        return (await self._capture(ref, 0, "", name, allow_secrets=True)).template

    async def _capture(
        self,
        ref: str,
        replicas: int,
        name_prefix: str,
        snapshot_name: str | None,
        allow_secrets: bool,
        child_network: str = "",
    ) -> Forked:
        source = self._vms.get(ref)
        if source.secrets and not allow_secrets:
            raise GroveError(
                "has_secrets",
                f"sandbox {source.id} holds secrets; its forks would hold copies of them",
                "pass --allow-secrets if the children may have them",
            )
        async with self._vms.lock(source.id):
            source, vm = self._vms.live_vm(source.id)
            if snapshot_name is not None:
                await _sync_guest(vm)
            async with contextlib.AsyncExitStack() as undo:
                undo.callback(self._collector.collect)  # runs last: frees what the undos left
                # Whatever happens, the source's template gives back what the fork filled.
                undo.callback(self._dig_source_template, source.mem_path)
                forked = await self._steps(
                    undo, source, vm, replicas, name_prefix, snapshot_name, child_network
                )
                undo.pop_all()  # done: nothing to undo
            self._dig_source_template(source.mem_path)
        self._loaders.refill(source)  # the next fork of this size finds a loader waiting
        template = forked.template
        for child in forked.children:
            await self._events.emit(
                child.id, "created", forked_from=source.id, template=template.id
            )
        await self._events.emit(
            source.id, "forked" if replicas else "snapshot", template=template.id,
            children=[c.id for c in forked.children], paused_ms=round(forked.paused_ms, 1),
        )  # fmt: skip
        # The new file's zero pages go as soon as its children run (see Holes).
        self._holes.dig_later(template.mem_path, delay=0.0)
        return forked

    def _dig_source_template(self, mem_path: str) -> None:
        if mem_path in self._frozen_memory():
            self._holes.dig_later(mem_path)

    def _frozen_memory(self) -> set[str]:
        return {t.mem_path for t in self._store.list_templates() if t.phase is TemplatePhase.READY}

    async def _steps(
        self,
        undo: contextlib.AsyncExitStack,
        source: SandboxRecord,
        vm: Vm,
        replicas: int,
        name_prefix: str,
        snapshot_name: str | None,
        child_network: str,
    ) -> Forked:
        warm_loader = self._loaders.take(capture.loader_key(source))
        template_id = warm_loader.template_id if warm_loader else capture.new_template_id()
        mem = self._paths.memory_dir / f"{template_id}.mem"
        if warm_loader is None:
            memfile.prepare(mem, source.mem_mib)
        # Step: child rows (undo: every child's VM, files and row).
        children: list[SandboxRecord] = []
        undo.push_async_callback(self._discard_all, children)
        self._child_records(children, source, template_id, replicas, name_prefix, child_network)
        crashpoints.reached("capture.children_recorded")
        # Step: the placeholder template (undo: failed, not dropped: if the source's disk was
        # already frozen, its new layer sits on this template's disk and GC must keep it).
        placeholder = TemplateRecord(
            id=template_id, kind="snapshot", environment=source.environment,
            image_hash="", vcpus=source.vcpus, mem_mib=source.mem_mib,
            phase=TemplatePhase.BUILDING, mem_path=str(mem), state_path="",
            disk_path=source.disk_path, created_at=time.time(), source_sandbox=source.id,
            name=snapshot_name, boot=dict(source.boot),
            parent_id=source.disk_base or source.template_id or None,
        )  # fmt: skip
        self._store.insert_template(placeholder)
        ready = False

        def fail_template() -> None:
            if not ready:
                self._store.update_template(template_id, phase=TemplatePhase.FAILED, name=None)

        undo.callback(fail_template)
        # Step: a loader, and child QEMUs waiting for state. Children start while the source
        # still runs: their disks sit on the source's current layer, which the capture
        # freezes; their memory maps the file the loader is about to fill.
        starting = (
            None
            if warm_loader is not None
            else asyncio.create_task(
                capture.start_loader(
                    self._paths, self._accel, source, self._networks.for_loader(), template_id
                )
            )
        )
        loader_box: list[capture.Loader] = [warm_loader] if warm_loader else []
        undo.push_async_callback(self._end_loader, starting, loader_box)
        child_disks = [self._restorer.new_disk(c.id) for c in children]
        await disks.overlays(child_disks, Path(source.disk_path), live=True)
        for child, disk in zip(children, child_disks, strict=True):
            child.disk_path = str(disk)  # so the undo removes it with the child
        launches: list[Awaitable[object]] = [
            self._restorer.launch_target(child, placeholder, Path(source.disk_path), disk)
            for child, disk in zip(children, child_disks, strict=True)
        ]
        if source.mem_path in self._frozen_memory():
            launches.append(self._holes.fill(source.mem_path))
        results = await asyncio.gather(*launches, return_exceptions=True)
        if starting is not None:
            loader_box.append(await starting)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        crashpoints.reached("capture.targets_started")

        # Step: the capture (the source's pause). It consumes the loader.
        def paused(new_top: Path) -> None:
            # Recorded at once, in one write: from here on the source writes only to new_top.
            self._vms.set_phase(source, Phase.PAUSED, disk_path=str(new_top), disk_base=template_id)

        def resumed() -> None:
            if source.phase is Phase.PAUSED:
                self._vms.set_phase(source, Phase.RUNNING)

        loader = loader_box.pop()
        captured = await capture.capture(
            paths=self._paths, loader=loader, source=source, source_vm=vm,
            name=snapshot_name, on_paused=paused, on_resumed=resumed,
        )  # fmt: skip
        # Step: the template is ready (its undo no longer applies).
        template = captured.template
        self._store.delete_template(template_id)
        self._store.insert_template(template)
        ready = True
        crashpoints.reached("capture.template_ready")
        mem.chmod(0o400)
        # Step: the children restore from it.
        done = await asyncio.gather(
            *(self._restore_child(c, captured) for c in children), return_exceptions=True
        )
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
        crashpoints.reached("capture.children_restored")
        return Forked(source, template, list(children), captured.paused_ms)

    async def _restore_child(self, child: SandboxRecord, captured: capture.Captured) -> None:
        vm = self._vms.vm(child.id)
        assert vm is not None, "launch_target holds every child's VM"
        await self._restorer.complete(child, vm, Path(captured.template.state_path))
        child.create_ms = round(captured.total_ms, 1)
        self._store.update_sandbox(child.id, create_ms=child.create_ms)

    async def _discard_all(self, children: list[SandboxRecord]) -> None:
        for child in children:
            await self._vms.discard(child)

    @staticmethod
    async def _end_loader(
        starting: asyncio.Task[capture.Loader] | None, loader_box: list[capture.Loader]
    ) -> None:
        if starting is not None and not loader_box:
            starting.cancel()
            with contextlib.suppress(BaseException):
                loader_box.append(await starting)
        for loader in loader_box:
            await loader.vm.kill()

    def _child_records(
        self,
        children: list[SandboxRecord],
        source: SandboxRecord,
        template_id: str,
        replicas: int,
        name_prefix: str,
        network: str,
    ) -> None:
        names = [f"{name_prefix}-{i + 1}" if name_prefix else "" for i in range(replicas)]
        for name in names:
            if name and self._store.name_taken(name):
                raise GroveError(
                    "name_taken", f"a sandbox named '{name}' already exists",
                    "choose another --name prefix",
                )  # fmt: skip
        for name in names:
            child_id = new_sandbox_id()
            now = time.time()
            child = SandboxRecord(
                id=child_id, name=name or child_id, environment=source.environment,
                phase=Phase.CREATING, vcpus=source.vcpus, mem_mib=source.mem_mib,
                created_at=now, updated_at=now, template_id=template_id, parent_id=source.id,
                secrets=source.secrets, disk_base=template_id, origin=template_id,
                network=network or source.network,
            )  # fmt: skip
            self._store.insert_sandbox(child)
            children.append(child)
            sdir = self._paths.sandbox_dir(child_id)
            sdir.mkdir(parents=True, mode=0o700)
            secrets.inherit(self._paths.sandbox_dir(source.id), sdir)


async def _sync_guest(vm: Vm) -> None:
    """A named snapshot's disk is read offline (grove disk ls/read/export): flush the guest's
    dirty file pages first so its disk layer holds what the guest wrote, not only its memory.
    Best effort: a guest that cannot answer still gets its (crash-consistent) snapshot."""
    if vm.agent is None:
        return
    with contextlib.suppress(AgentError, OSError, TimeoutError):
        await vm.agent.run(["sync"], timeout_s=30)
