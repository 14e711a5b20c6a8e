"""Fork and snapshot as one transaction: explicit steps, each pushing its own undo.

A capture with N children (N = 0 for a named snapshot): the memory layout chosen (a delta over
the source's own memory file, or a full copy into a new one: see capture.py); child rows; a
placeholder template row; for a full copy a loader; child QEMUs waiting for state (started while
the source still runs); the source's template holes filled and its pages mapped in; the capture
itself (the source's short pause); the template made ready; the children restored. A failure
at any step runs the undos of the steps done, newest first, and leaves the source running. A
crash between steps is for recovery (see crashpoints.POINTS).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from engine import crashpoints
from engine.agent.client import AgentError
from engine.config import Paths
from engine.errors import GroveError, invalid
from engine.fork import capture, delta
from engine.fork.collector import Collector
from engine.fork.holes import Holes
from engine.fork.loaders import LoaderPool
from engine.images import disks
from engine.metering import pagemap
from engine.net.networks import Networks
from engine.sandbox.events import EventLog
from engine.sandbox.naming import new_sandbox_id, validate_name
from engine.sandbox.phase import Phase
from engine.sandbox.restore import Restorer
from engine.sandbox.vms import SandboxVms
from engine.secrets.keeper import SecretKeeper
from engine.store.db import Store
from engine.store.records import SandboxRecord, TemplatePhase, TemplateRecord
from engine.vmm import memfile
from engine.vmm.accel import Accelerator
from engine.vmm.vm import Vm

MAX_REPLICAS = 64
# How a fork lays out memory (see capture.py): "auto" picks the cheaper of the two per fork.
LAYOUTS = ("auto", "delta", "full")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Forked:
    source: SandboxRecord
    template: TemplateRecord
    children: list[SandboxRecord]
    paused_ms: float
    memory: str  # the layout used: "delta" or "full"


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
        secrets: SecretKeeper,
    ) -> None:
        self._networks = networks
        self._secrets = secrets
        self._paths = paths
        self._store = store
        self._accel = accel
        self._events = events
        self._vms = vms
        self._restorer = restorer
        self._loaders = loaders
        self._holes = holes
        self._collector = collector
        self._delta_unsupported = False

    async def fork(
        self,
        ref: str,
        replicas: int = 1,
        name_prefix: str = "",
        allow_secrets: bool = False,
        network: str = "",
        memory: str = "",
    ) -> Forked:
        """Fork a running sandbox into replicas children; the source keeps running."""
        if not 1 <= replicas <= MAX_REPLICAS:
            raise invalid(
                f"invalid replica count {replicas}", f"pass --replicas from 1 to {MAX_REPLICAS}"
            )
        layout = memory or default_layout()
        if layout not in LAYOUTS:
            raise invalid(
                f"invalid memory layout '{layout}'",
                "pass --memory auto, delta or full (the engine's default: GROVE_FORK_MEMORY)",
            )
        if name_prefix:
            validate_name(f"{name_prefix}-{replicas}")
        # Validated before anything starts; empty: every child inherits the source's policy.
        child_network = str(self._networks.policy_of(network)) if network else ""
        return await self._capture(
            ref, replicas, name_prefix, None, allow_secrets, child_network, layout=layout
        )

    async def snapshot(self, ref: str, name: str) -> TemplateRecord:
        validate_name(name)
        if any(t.name == name for t in self._store.list_templates()):
            raise GroveError(
                "name_taken",
                f"a snapshot named '{name}' already exists",
                "choose another name or remove it with 'grove snapshot rm NAME'",
            )
        captured = await self._capture(ref, 0, "", name, True, layout=default_layout())
        return captured.template

    async def _capture(
        self,
        ref: str,
        replicas: int,
        name_prefix: str,
        snapshot_name: str | None,
        allow_secrets: bool,
        child_network: str = "",
        *,
        layout: str,
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
                    undo, source, vm, replicas, name_prefix, snapshot_name, child_network, layout
                )
                undo.pop_all()  # done: nothing to undo (the source's template is dug)
        template = forked.template
        if template.mem_base is None:
            self._loaders.refill(source)  # the next full copy of this size finds one waiting
        for child in forked.children:
            await self._events.emit(
                child.id, "created", forked_from=source.id, template=template.id
            )
        await self._events.emit(
            source.id, "forked" if replicas else "snapshot", template=template.id,
            children=[c.id for c in forked.children], paused_ms=round(forked.paused_ms, 1),
        )  # fmt: skip
        if template.mem_base is None:
            # The new file's zero pages go as soon as its children run (see Holes). A delta
            # has no file of its own: the source's is dug as after any fork.
            self._holes.dig_later(template.mem_path, delay=0.0)
        return forked

    async def _map_in_source_memory(self, source: SandboxRecord, vm: Vm) -> None:
        """Before the pause: allocate the source's template holes in one go, then fault every
        page of its guest RAM into the source's page tables, so the copy in the pause (which
        reads every page) takes no fault. Digging the template after the fork unmaps its zero
        pages again; without this the next pause faulted them back in one by one."""
        await self._holes.fill(source.mem_path)
        await asyncio.to_thread(pagemap.map_in, vm.pid, source.mem_path)

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
        layout: str,
    ) -> Forked:
        base = self._delta_base(source, vm, max(replicas, 1), layout)
        warm_loader = None if base else self._loaders.take(capture.loader_key(source))
        template_id = warm_loader.template_id if warm_loader else capture.new_template_id()
        # A delta maps the source's own memory file; a full copy gets a new one.
        mem = Path(source.mem_path) if base else self._paths.memory_dir / f"{template_id}.mem"
        if base is None and warm_loader is None:
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
            parent_id=source.disk_base or source.template_id or None, mem_base=base,
            secret_digests=dict(source.secret_digests),
        )  # fmt: skip
        self._store.insert_template(placeholder)
        if snapshot_name is not None and source.secrets:
            # Sandboxes created from a named snapshot get the secrets its memory holds.
            self._secrets.copy(source.id, template_id)
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
            if warm_loader is not None or base is not None
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
            launches.append(self._map_in_source_memory(source, vm))
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

        if base is not None:
            captured = await self._capture_delta(source, vm, template_id, base, snapshot_name,
                                                 paused, resumed)  # fmt: skip
        else:
            captured = await capture.capture(
                paths=self._paths, loader=loader_box.pop(), source=source, source_vm=vm,
                name=snapshot_name, on_paused=paused, on_resumed=resumed,
            )  # fmt: skip
        # The source's template gives back what the fill allocated at once, while the children
        # restore: for that second it held the guest's whole memory size.
        self._dig_source_template(source.mem_path)
        # Step: the template is ready (its undo no longer applies).
        template = captured.template
        template.secret_digests = dict(source.secret_digests)
        self._store.delete_template(template_id)
        self._store.insert_template(template)
        ready = True
        crashpoints.reached("capture.template_ready")
        if base is None:
            mem.chmod(0o400)
        # Step: the children restore from it.
        done = await asyncio.gather(
            *(self._restore_child(c, captured) for c in children), return_exceptions=True
        )
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
        crashpoints.reached("capture.children_restored")
        memory = "full" if base is None else "delta"
        return Forked(source, template, list(children), captured.paused_ms, memory)

    def _delta_base(self, source: SandboxRecord, vm: Vm, children: int, layout: str) -> str | None:
        """The template whose memory file a delta capture of source maps, or None for a full
        copy. A delta costs each child the source's private pages; a full copy costs one new
        file shared by all (what the source's file holds, plus those pages)."""
        template = self._store.get_template(source.template_id) if source.template_id else None
        possible = (
            template is not None
            and template.phase is TemplatePhase.READY
            and template.mem_path == source.mem_path  # a cold-booted sandbox owns its file
        )
        if layout == "delta" and not possible:
            raise GroveError(
                "delta_unavailable",
                f"sandbox {source.id} was booted cold and its memory file is its own, so a fork "
                "of it cannot be a delta over a template",
                "fork it with --memory full (or auto)",
            )
        if layout == "full" or self._delta_unsupported or template is None or not possible:
            return None
        if layout == "delta":
            return template.memory_owner
        private = pagemap.private_pages(vm.pid, source.mem_path, source.mem_mib << 8).count(1)
        delta_cost = children * private * pagemap.PAGE_SIZE
        full_cost = self._holes.used_bytes(source.mem_path) + private * pagemap.PAGE_SIZE
        log.info("fork of %s into %d: delta %.0f MiB vs full copy %.0f MiB", source.id,
                 children, delta_cost / 2**20, full_cost / 2**20)  # fmt: skip
        return template.memory_owner if delta_cost <= full_cost else None

    async def _capture_delta(
        self,
        source: SandboxRecord,
        vm: Vm,
        template_id: str,
        base: str,
        snapshot_name: str | None,
        paused: Callable[[Path], None],
        resumed: Callable[[], None],
    ) -> capture.Captured:
        try:
            return await capture.capture_delta(
                paths=self._paths, template_id=template_id, source=source, source_vm=vm,
                mem_base=base, name=snapshot_name, on_paused=paused, on_resumed=resumed,
            )  # fmt: skip
        except delta.StreamError as exc:
            # Not a stream this engine can reduce (another QEMU?): full copies from now on.
            self._delta_unsupported = True
            log.error("delta capture of %s failed (%s): forks copy memory in full", source.id,
                      exc)  # fmt: skip
            raise GroveError(
                "fork_failed",
                f"could not reduce {source.id}'s memory stream to a delta: {exc}",
                "fork again: this engine now copies memory in full (GROVE_FORK_MEMORY=full)",
            ) from exc

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
                network=network or source.network, secret_digests=dict(source.secret_digests),
            )  # fmt: skip
            self._store.insert_sandbox(child)
            children.append(child)
            sdir = self._paths.sandbox_dir(child_id)
            sdir.mkdir(parents=True, mode=0o700)
            if source.secrets:
                # Only forked when allowed: a child holds copies, wiped when it terminates.
                child.secret_digests = self._secrets.copy(source.id, child_id)
                self._store.update_sandbox(child_id, secret_digests=child.secret_digests)


async def _sync_guest(vm: Vm) -> None:
    """A named snapshot's disk is read offline (grove disk ls/read/export): flush the guest's
    dirty file pages first so its disk layer holds what the guest wrote, not only its memory.
    Best effort: a guest that cannot answer still gets its (crash-consistent) snapshot."""
    if vm.agent is None:
        return
    with contextlib.suppress(AgentError, OSError, TimeoutError):
        await vm.agent.run(["sync"], timeout_s=30)


def default_layout() -> str:
    """The engine's layout when a fork names none (GROVE_FORK_MEMORY, default auto)."""
    return os.environ.get("GROVE_FORK_MEMORY", "") or "auto"
