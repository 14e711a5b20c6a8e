"""Sandboxes: create (restore from a template), exec, stop/start, terminate, and re-adoption.

Every sandbox's VM has exactly one owner here (``self._vms``); the store is updated before
and after each step so a crash at any point leaves a record the next engine can reconcile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from secrets import token_hex

from engine import crashpoints
from engine.agent.client import AgentClient, AgentError, ExecHandle
from engine.agent.errors import spawn_error
from engine.config import DEFAULT_MEM_MIB, DEFAULT_VCPUS, MAX_MEM_MIB, MAX_VCPUS, MIN_MEM_MIB, Paths
from engine.errors import GroveError, invalid
from engine.fork import capture, gc
from engine.fork.loaders import LoaderPool
from engine.images import disks, environments
from engine.images.templates import AGENT_BOOT_TIMEOUT, Templates
from engine.sandbox import ownership, pool
from engine.sandbox.events import EventLog
from engine.sandbox.naming import new_sandbox_id, validate_name
from engine.sandbox.phase import LIVE, Phase, check_transition
from engine.store.db import Store
from engine.store.records import SandboxRecord, TemplateRecord
from engine.vmm import cmdline
from engine.vmm.accel import Accelerator
from engine.vmm.vm import Vm, VmFiles

log = logging.getLogger(__name__)

# A restored guest has its agent already running: it answers within milliseconds.
AGENT_RESTORE_TIMEOUT = 30.0
MAX_REPLICAS = 64
# Seconds after a fork before the zero pages it allocated in template files are given back.
# At once by default: until then the host's copy-on-write total counts them, and the next
# fork allocates them again before (not during) its pause, beside its children's start.
DIG_DELAY_S = float(os.environ.get("GROVE_DIG_DELAY", "0"))

ImageLoader = Callable[[str], "asyncio.Future[environments.EnvironmentImage]"]


class Sandboxes:
    def __init__(
        self,
        paths: Paths,
        store: Store,
        accel: Accelerator,
        templates: Templates,
        events: EventLog,
        load_image: Callable[[str], asyncio.Task[environments.EnvironmentImage]],
    ) -> None:
        self._paths = paths
        self._store = store
        self._accel = accel
        self._templates = templates
        self._events = events
        self._load_image = load_image
        self._vms: dict[str, Vm] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Sandboxes whose VM we are ending on purpose: their exit is not a failure.
        self._ending: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._pool = pool.WarmPool(paths, accel)
        self._loaders = LoaderPool(paths, accel)
        self._dig_timers: dict[str, asyncio.TimerHandle] = {}
        self._digging: dict[str, asyncio.Task[None]] = {}

    # lookup

    def get(self, ref: str) -> SandboxRecord:
        if not ref:
            raise invalid("no sandbox id given", "pass a sandbox id or name; see 'grove ps'")
        record = self._store.find_sandbox(ref)
        if record is None:
            raise GroveError(
                "sandbox_not_found",
                f"no sandbox with id or name '{ref}'",
                "list sandboxes with 'grove sandbox ls'",
            )
        return record

    def records(self, include_terminated: bool = False) -> list[SandboxRecord]:
        return self._store.list_sandboxes(include_terminated)

    def live_vm(self, ref: str) -> tuple[SandboxRecord, Vm]:
        record = self.get(ref)
        vm = self._vms.get(record.id)
        if record.phase is not Phase.RUNNING or vm is None or vm.agent is None:
            raise GroveError(
                "sandbox_not_running",
                f"sandbox {record.id} is {record.phase.value}, not running",
                _not_running_remedy(record),
            )
        return record, vm

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    def _files(self, sandbox_id: str) -> VmFiles:
        return VmFiles(self._paths.socket_dir / sandbox_id, self._paths.sandbox_dir(sandbox_id))

    def _set_phase(self, record: SandboxRecord, phase: Phase, **fields: object) -> None:
        check_transition(record.id, record.phase, phase)
        record.phase = phase
        for key, value in fields.items():
            setattr(record, key, value)
        self._store.update_sandbox(record.id, phase=phase, **fields)

    # create

    async def create(
        self,
        environment: str,
        name: str = "",
        vcpus: int = 0,
        mem_mib: int = 0,
        secrets: dict[str, str] | None = None,
        from_snapshot: str = "",
    ) -> SandboxRecord:
        cmdline.qemu_binary()  # fail first, with the install hint, when QEMU is missing
        snapshot = self.snapshot_by_name(from_snapshot) if from_snapshot else None
        if snapshot is not None:
            if (vcpus and vcpus != snapshot.vcpus) or (mem_mib and mem_mib != snapshot.mem_mib):
                raise invalid(
                    f"snapshot {snapshot.name} was taken with {snapshot.vcpus} vCPU and "
                    f"{snapshot.mem_mib} MiB; a restore cannot change that",
                    "omit --vcpus/--mem-mib when using --from-snapshot",
                )
            environment = environment or snapshot.environment
            vcpus, mem_mib = snapshot.vcpus, snapshot.mem_mib
        vcpus = vcpus or DEFAULT_VCPUS
        mem_mib = mem_mib or DEFAULT_MEM_MIB
        _validate_size(vcpus, mem_mib)
        if not environment:
            raise invalid(
                "no environment given", "pass one, e.g. 'debian:12'; see 'grove env list'"
            )
        environments.validate_name(environment)
        sandbox_id = new_sandbox_id()
        name = validate_name(name) if name else sandbox_id
        if self._store.name_taken(name):
            raise GroveError(
                "name_taken",
                f"a sandbox named '{name}' already exists",
                "choose another --name or terminate the existing one",
            )
        for key in secrets or {}:
            _validate_env_key(key)
        if snapshot is not None:
            template = snapshot
        else:
            image = await self._load_image(environment)
            template = await self._templates.ensure(image, vcpus, mem_mib)
        started = time.monotonic()
        now = time.time()
        record = SandboxRecord(
            id=sandbox_id,
            name=name,
            environment=environment,
            phase=Phase.CREATING,
            vcpus=vcpus,
            mem_mib=mem_mib,
            created_at=now,
            updated_at=now,
            template_id=template.id,
            secrets=bool(secrets),
        )
        self._store.insert_sandbox(record)
        crashpoints.reached("create.recorded")
        try:
            sdir = self._paths.sandbox_dir(sandbox_id)
            sdir.mkdir(parents=True, mode=0o700)
            if secrets:
                _write_secrets(sdir, secrets)
            await self._restore(record, template)
        except BaseException as exc:
            await self._discard(record)
            if isinstance(exc, AgentError):
                raise GroveError(
                    "create_failed", f"sandbox did not come up: {exc}", "see 'grove doctor'"
                ) from exc
            raise
        record.extra["create_ms"] = round((time.monotonic() - started) * 1000, 1)
        self._store.update_sandbox(record.id, extra=record.extra)
        crashpoints.reached("create.running")
        await self._events.emit(record.id, "created", environment=environment, template=template.id)
        return record

    def _new_disk(self, sandbox_id: str) -> Path:
        return self._paths.disks / f"{sandbox_id}-{token_hex(3)}.qcow2"

    async def _launch_target(
        self,
        record: SandboxRecord,
        template: TemplateRecord,
        backing: Path,
        disk: Path | None = None,
    ) -> Vm:
        """Start a QEMU waiting for a snapshot: memory MAP_PRIVATE over the template's file,
        a fresh disk layer over backing. Nothing runs until complete_restore()."""
        files = self._files(record.id)
        # A restore from a finished template may take a warm VM and refills the pool; fork
        # children (given their disks) restore from a template still being captured.
        from_template = disk is None
        warm = self._pool.take(template.id) if from_template else None
        if warm is not None:
            vm = self._claim(warm, files)
            disk = warm.disk
        else:
            if disk is None:
                disk = self._new_disk(record.id)
                seed = self._paths.template_dir(template.id) / "empty-overlay.qcow2"
                await disks.overlay_from_seed(disk, backing, seed)
                crashpoints.reached("create.disk_made")
            spec = pool.restore_spec(
                self._accel, template, files, disk, self._paths.vm_tag(record.id)
            )
            vm = await Vm.launch(spec, files)
            crashpoints.reached("create.spawned")
        if from_template:
            self._pool.refill(template)
        record.disk_path = str(disk)
        self._vms[record.id] = vm
        record.template_id = template.id
        record.extra.update(boot=template.boot, image_hash=template.image_hash)
        self._store.update_sandbox(
            record.id,
            pid=vm.pid,
            pid_start=vm.process.start,
            mem_path=template.mem_path,
            disk_path=str(disk),
            template_id=template.id,
            extra=record.extra,
        )
        return vm

    def _claim(self, warm: pool.Warm, files: VmFiles) -> Vm:
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

    async def _complete_restore(self, record: SandboxRecord, vm: Vm, state: Path) -> None:
        t0 = time.monotonic()
        if vm.agent is None:
            await vm.restore(state)
        crashpoints.reached("create.restored")
        restored = time.monotonic()
        # A warm pool VM was restored and connected ahead of time.
        agent = vm.agent or await vm.connect_agent(AGENT_RESTORE_TIMEOUT)
        connected = time.monotonic()
        await self._new_identity(record, agent)
        self._set_phase(record, Phase.RUNNING, pid=vm.pid)
        self._watch(record.id, vm)
        log.info(
            "restored %s: restore=%.0f agent=%.0f identity=%.0f ms", record.id,
            (restored - t0) * 1000, (connected - restored) * 1000,
            (time.monotonic() - connected) * 1000,
        )  # fmt: skip

    async def _restore(self, record: SandboxRecord, template: TemplateRecord) -> None:
        vm = await self._launch_target(record, template, Path(template.disk_path))
        record.extra["disk_base"] = template.id
        record.extra.setdefault("origin", template.id)
        self._store.update_sandbox(record.id, extra=record.extra)
        await self._complete_restore(record, vm, Path(template.state_path))

    async def _new_identity(self, record: SandboxRecord, agent: AgentClient) -> None:
        """A restored guest is a copy: reseed its RNG, step its clock, give it its own name."""
        try:
            reply = await agent.restore_identity(os.urandom(64), time.time_ns(), record.name)
        except AgentError as exc:
            reply = {"error": str(exc)}
        if not reply.get("reseeded"):
            # Fail closed: two sandboxes must never share an RNG stream.
            raise GroveError(
                "reseed_failed",
                "the guest agent did not confirm reseeding its random number generator",
                "rebuild the environment with 'grove env pull --force ENV'",
            )

    # exec

    async def exec(
        self,
        ref: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        timeout_s: float | None = None,
        stdin: bool = False,
    ) -> tuple[SandboxRecord, ExecHandle]:
        if not argv or not argv[0]:
            raise invalid("no command given", "put the command after '--', e.g. -- uname -a")
        if timeout_s is not None and timeout_s < 0:
            raise invalid(f"invalid timeout {timeout_s}", "pass a positive number of seconds")
        for key in env or {}:
            _validate_env_key(key)
        record, vm = self.live_vm(ref)
        assert vm.agent is not None
        merged = {**_read_secrets(self._paths.sandbox_dir(record.id)), **(env or {})}
        try:
            handle = await vm.agent.exec(
                argv, env=merged or None, cwd=cwd or None, timeout_s=timeout_s, stdin=stdin
            )
        except AgentError as exc:
            raise _exec_error(exc, argv, cwd) from exc
        await self._events.emit(record.id, "exec_started", argv=argv[:1], pid=handle.pid)
        return record, handle

    async def exec_ended(self, sandbox_id: str, exit_code: int | None, duration_ms: float) -> None:
        await self._events.emit(
            sandbox_id, "exec_ended", exit_code=exit_code, duration_ms=round(duration_ms, 1)
        )

    async def ping(self, ref: str) -> float:
        _, vm = self.live_vm(ref)
        assert vm.agent is not None
        return float(await vm.agent.ping())

    # lifecycle

    async def stop(self, ref: str) -> SandboxRecord:
        record = self.get(ref)
        async with self._lock(record.id):
            record = self.get(record.id)
            self._set_phase(record, Phase.STOPPING)
            await self._end_vm(record.id, graceful=True)
            crashpoints.reached("stop.vm_ended")
            self._drop_private_memory(record)
            self._set_phase(record, Phase.STOPPED, pid=None, pid_start=None)
            await self._events.emit(record.id, "stopped")
            return record

    async def _end_vm(self, sandbox_id: str, graceful: bool) -> None:
        """End a sandbox's VM on purpose (its exit is then not reported as a failure)."""
        vm = self._vms.pop(sandbox_id, None)
        if vm is None:
            return
        self._ending.add(sandbox_id)
        try:
            await (vm.quit() if graceful else vm.kill())
        finally:
            self._ending.discard(sandbox_id)

    async def start(self, ref: str) -> SandboxRecord:
        """Cold-boot a stopped sandbox from its own disk (its memory was not kept)."""
        record = self.get(ref)
        async with self._lock(record.id):
            record = self.get(record.id)
            if record.phase is not Phase.STOPPED:
                raise GroveError(
                    "invalid_phase",
                    f"sandbox {record.id} is {record.phase.value}; only a stopped one can start",
                    _not_running_remedy(record)
                    if record.phase is not Phase.RUNNING
                    else "it is already running",
                )
            image = await self._load_image(record.environment)
            boot = environments.boot_args(image, hostname=record.name)
            files = self._files(record.id)
            mem_path = self._paths.memory_dir / f"{record.id}.mem"
            mem_path.unlink(missing_ok=True)
            spec = cmdline.VmSpec(
                accel=self._accel,
                vcpus=record.vcpus,
                mem_mib=record.mem_mib,
                mem_path=mem_path,
                mem_shared=True,
                disk=Path(record.disk_path),
                qmp_socket=files.qmp,
                ctl_socket=files.ctl,
                console_log=files.console,
                kernel=Path(boot["kernel"]),
                initrd=Path(boot["initrd"]),
                append=boot["append"],
                tag=self._paths.vm_tag(record.id),
            )
            record.extra["boot"] = boot
            self._set_phase(record, Phase.STARTING, mem_path=str(mem_path), extra=record.extra)
            try:
                vm = await Vm.launch(spec, files)
                self._vms[record.id] = vm
                crashpoints.reached("start.spawned")
                self._store.update_sandbox(record.id, pid=vm.pid, pid_start=vm.process.start)
                agent = await vm.connect_agent(AGENT_BOOT_TIMEOUT)
                await self._new_identity(record, agent)
            except BaseException:
                vm_ = self._vms.pop(record.id, None)
                if vm_ is not None:
                    await vm_.kill()
                mem_path.unlink(missing_ok=True)
                self._set_phase(record, Phase.FAILED, error="cold boot failed", pid=None)
                raise
            self._set_phase(record, Phase.RUNNING, pid=vm.pid)
            self._watch(record.id, vm)
            await self._events.emit(record.id, "started")
            return record

    async def terminate(self, ref: str) -> SandboxRecord:
        record = self.get(ref)
        async with self._lock(record.id):
            record = self.get(record.id)
            if record.phase is Phase.TERMINATED:
                raise GroveError(
                    "already_terminated",
                    f"sandbox {record.id} is already terminated",
                    "list live sandboxes with 'grove sandbox ls'",
                )
            if record.phase is not Phase.TERMINATING:
                self._set_phase(record, Phase.TERMINATING)
            await self._end_vm(record.id, graceful=False)
            crashpoints.reached("terminate.vm_ended")
            self._remove_files(record)
            crashpoints.reached("terminate.files_removed")
            self._set_phase(record, Phase.TERMINATED, pid=None, pid_start=None)
            await self._events.emit(record.id, "terminated")
        self.collect_garbage()
        return record

    async def terminate_all(self) -> list[SandboxRecord]:
        live = [r for r in self.records() if r.phase is not Phase.TERMINATED]
        return list(await asyncio.gather(*(self.terminate(r.id) for r in live)))

    async def _discard(self, record: SandboxRecord) -> None:
        """Undo a failed create completely: no process, socket, file or row remains."""
        vm = self._vms.pop(record.id, None)
        if vm is not None:
            await vm.kill()
        self._remove_files(record)
        self._store.delete_sandbox(record.id)

    def _remove_files(self, record: SandboxRecord) -> None:
        self._drop_private_memory(record)
        self._drop_top_disk(record)
        shutil.rmtree(self._paths.sandbox_dir(record.id), ignore_errors=True)
        self._files(record.id).remove_sockets()

    def _drop_top_disk(self, record: SandboxRecord) -> None:
        """The sandbox's own writable layer; layers a snapshot froze belong to the snapshot."""
        if not record.disk_path:
            return
        frozen = {t.disk_path for t in self._store.list_templates()}
        if record.disk_path not in frozen:
            Path(record.disk_path).unlink(missing_ok=True)

    def _drop_private_memory(self, record: SandboxRecord) -> None:
        # A cold-booted sandbox owns its memory file; a restored one maps its template's.
        own = self._paths.memory_dir / f"{record.id}.mem"
        own.unlink(missing_ok=True)

    # fork and snapshots

    def snapshot_by_name(self, name: str) -> TemplateRecord:
        for template in self._store.list_templates():
            if template.name == name and template.phase == "ready":
                return template
        raise GroveError(
            "snapshot_not_found",
            f"no snapshot named '{name}'",
            "list snapshots with 'grove snapshot ls'",
        )

    def snapshots(self, source: str = "") -> list[TemplateRecord]:
        source_id = self.get(source).id if source else ""
        return [
            t
            for t in self._store.list_templates()
            if t.name and t.phase == "ready" and (not source_id or t.source_sandbox == source_id)
        ]

    def snapshot_dependents(self, template_id: str) -> list[str]:
        return gc.dependents(
            template_id, self._store.list_templates(), self._store.list_sandboxes()
        )

    async def fork(
        self, ref: str, replicas: int = 1, name_prefix: str = "", allow_secrets: bool = False
    ) -> tuple[SandboxRecord, TemplateRecord, list[SandboxRecord], float]:
        """Fork a running sandbox into replicas children; the source keeps running."""
        if not 1 <= replicas <= MAX_REPLICAS:
            raise invalid(
                f"invalid replica count {replicas}", f"pass --replicas from 1 to {MAX_REPLICAS}"
            )
        if name_prefix:
            validate_name(f"{name_prefix}-{replicas}")
        return await self._capture(ref, replicas, name_prefix, None, allow_secrets)

    async def snapshot(self, ref: str, name: str) -> TemplateRecord:
        validate_name(name)
        if any(t.name == name for t in self._store.list_templates()):
            raise GroveError(
                "name_taken",
                f"a snapshot named '{name}' already exists",
                "choose another name or remove it with 'grove snapshot rm NAME'",
            )
        _, template, _, _ = await self._capture(ref, 0, "", name, allow_secrets=True)
        return template

    async def _capture(
        self,
        ref: str,
        replicas: int,
        name_prefix: str,
        snapshot_name: str | None,
        allow_secrets: bool,
    ) -> tuple[SandboxRecord, TemplateRecord, list[SandboxRecord], float]:
        source = self.get(ref)
        if source.secrets and not allow_secrets:
            raise GroveError(
                "has_secrets",
                f"sandbox {source.id} holds secrets; its forks would hold copies of them",
                "pass --allow-secrets if the children may have them",
            )
        async with self._lock(source.id):
            source, vm = self.live_vm(source.id)
            warm_loader = self._loaders.take(capture.loader_key(source))
            template_id = warm_loader.template_id if warm_loader else capture.new_template_id()
            mem = self._paths.memory_dir / f"{template_id}.mem"
            if warm_loader is None:
                capture.prepare_memory(mem, source.mem_mib)
            children = self._child_records(source, template_id, replicas, name_prefix)
            crashpoints.reached("capture.children_recorded")
            # Child QEMUs start while the source still runs: their disks sit on the source's
            # current layer, which the capture freezes; their memory maps the file the loader
            # is about to fill. They only load state once it exists.
            placeholder = TemplateRecord(
                id=template_id, kind="snapshot", environment=source.environment,
                image_hash="", vcpus=source.vcpus, mem_mib=source.mem_mib, phase="building",
                mem_path=str(mem), state_path="", disk_path=source.disk_path,
                created_at=time.time(), source_sandbox=source.id, name=snapshot_name,
                boot=dict(source.extra.get("boot", {})),
                parent_id=str(source.extra.get("disk_base") or source.template_id or "") or None,
            )  # fmt: skip
            self._store.insert_template(placeholder)
            template: TemplateRecord | None = None
            loader: capture.Loader | None = warm_loader
            try:
                starting = (
                    None
                    if loader is not None
                    else asyncio.create_task(
                        capture.start_loader(self._paths, self._accel, source, template_id)
                    )
                )
                child_disks = [self._new_disk(c.id) for c in children]
                await disks.overlays(child_disks, Path(source.disk_path), live=True)
                for child, disk in zip(children, child_disks, strict=True):
                    child.disk_path = str(disk)  # so a failure below removes it with the child
                launches: list[Awaitable[object]] = [
                    self._launch_target(child, placeholder, Path(source.disk_path), disk)
                    for child, disk in zip(children, child_disks, strict=True)
                ]
                frozen = {t.mem_path for t in self._store.list_templates() if t.phase == "ready"}
                if source.mem_path in frozen:
                    dig = self._dig_timers.pop(source.mem_path, None)
                    if dig is not None:
                        dig.cancel()
                    launches.append(self._fill_holes(source.mem_path))
                results = await asyncio.gather(*launches, return_exceptions=True)
                if starting is not None:
                    loader = await starting
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
                assert loader is not None
                crashpoints.reached("capture.targets_started")

                def disk_frozen(new_top: Path) -> None:
                    # Recorded at once: from here on the source writes only to new_top.
                    source.disk_path = str(new_top)
                    source.extra["disk_base"] = template_id
                    self._store.update_sandbox(
                        source.id, disk_path=str(new_top), extra=source.extra
                    )

                captured = await capture.capture(
                    paths=self._paths, loader=loader, source=source, source_vm=vm,
                    name=snapshot_name, on_disk_frozen=disk_frozen,
                )  # fmt: skip
                loader = None  # consumed: capture() ended its process
                template = captured.template
                self._store.delete_template(template_id)
                self._store.insert_template(template)
                crashpoints.reached("capture.template_ready")
                mem.chmod(0o400)
                child_vms = [self._vms[c.id] for c in children]
                done = await asyncio.gather(
                    *(
                        self._complete_restore(c, v, Path(template.state_path))
                        for c, v in zip(children, child_vms, strict=True)
                    ),
                    return_exceptions=True,
                )
                for outcome in done:
                    if isinstance(outcome, BaseException):
                        raise outcome
                crashpoints.reached("capture.children_restored")
            except BaseException:
                if starting is not None and loader is None:
                    starting.cancel()
                    with contextlib.suppress(BaseException):
                        loader = await starting
                if loader is not None:
                    await loader.vm.kill()
                for child in children:
                    await self._discard(child)
                # Not dropped directly: if the source's disk was already frozen, its new layer
                # sits on this template's disk and GC must keep that layer.
                if template is None:
                    self._store.update_template(template_id, phase="failed", name=None)
                self.collect_garbage()
                raise
        self._loaders.refill(source)  # the next fork of this size finds a loader waiting
        for child in children:
            child.extra["create_ms"] = round(captured.total_ms, 1)
            self._store.update_sandbox(child.id, extra=child.extra)
            await self._events.emit(
                child.id, "created", forked_from=source.id, template=template_id
            )
        await self._events.emit(
            source.id, "forked" if replicas else "snapshot", template=template_id,
            children=[c.id for c in children], paused_ms=round(captured.paused_ms, 1),
        )  # fmt: skip
        # The full-RAM copy read every page of the source's template, allocating its holes,
        # and wrote zero pages into the new file: both are given back now that the children
        # run. Only frozen template files are dug; a live guest's own RAM file could race
        # with its writes.
        frozen = {t.mem_path for t in self._store.list_templates() if t.phase == "ready"}
        for path in {str(mem), source.mem_path} & frozen:
            self._schedule_dig(path)
        return source, template, children, captured.paused_ms

    async def _fill_holes(self, path: str) -> None:
        digging = self._digging.get(path)
        if digging is not None:  # let it finish, or the pause faults in what it just freed
            with contextlib.suppress(Exception):
                await digging
        await capture.fill_holes(Path(path))

    def _schedule_dig(self, path: str, delay: float = DIG_DELAY_S) -> None:
        timer = self._dig_timers.pop(path, None)
        if timer is not None:
            timer.cancel()

        def dig() -> None:
            self._dig_timers.pop(path, None)
            task = asyncio.create_task(capture.dig_holes(Path(path)))
            self._background.add(task)
            self._digging[path] = task
            task.add_done_callback(self._background.discard)
            task.add_done_callback(lambda _t: self._digging.pop(path, None))

        self._dig_timers[path] = asyncio.get_running_loop().call_later(delay, dig)

    def _child_records(
        self, source: SandboxRecord, template_id: str, replicas: int, name_prefix: str
    ) -> list[SandboxRecord]:
        children = []
        for i in range(replicas):
            child_id = new_sandbox_id()
            name = f"{name_prefix}-{i + 1}" if name_prefix else child_id
            if self._store.name_taken(name):
                raise GroveError(
                    "name_taken", f"a sandbox named '{name}' already exists",
                    "choose another --name prefix",
                )  # fmt: skip
            now = time.time()
            child = SandboxRecord(
                id=child_id, name=name, environment=source.environment, phase=Phase.CREATING,
                vcpus=source.vcpus, mem_mib=source.mem_mib, created_at=now, updated_at=now,
                template_id=template_id, parent_id=source.id, secrets=source.secrets,
                extra={"disk_base": template_id, "origin": template_id},
            )  # fmt: skip
            self._store.insert_sandbox(child)
            sdir = self._paths.sandbox_dir(child_id)
            sdir.mkdir(parents=True, mode=0o700)
            src_secrets = self._paths.sandbox_dir(source.id) / "secrets.json"
            if src_secrets.exists():
                shutil.copy2(src_secrets, sdir / "secrets.json")
            children.append(child)
        return children

    async def reset(self, ref: str, snapshot_name: str = "") -> SandboxRecord:
        """Throw away the sandbox's state and restore it from a snapshot (default: how it
        was created). Same id, same name; a new VM process."""
        record = self.get(ref)
        target = (
            self.snapshot_by_name(snapshot_name)
            if snapshot_name
            else self._store.get_template(str(record.extra.get("origin") or record.template_id))
        )
        if target is None or target.phase != "ready":
            raise GroveError(
                "snapshot_not_found",
                f"the state sandbox {record.id} was created from is gone",
                "reset to a named snapshot with --snapshot NAME",
            )
        if (target.vcpus, target.mem_mib) != (record.vcpus, record.mem_mib):
            raise invalid(
                f"snapshot {target.name or target.id} has another size than {record.id}",
                "create a new sandbox with --from-snapshot instead",
            )
        async with self._lock(record.id):
            record = self.get(record.id)
            if record.phase not in (Phase.RUNNING, Phase.STOPPED, Phase.PAUSED):
                raise GroveError(
                    "invalid_phase", f"sandbox {record.id} is {record.phase.value}",
                    _not_running_remedy(record),
                )  # fmt: skip
            # The target is recorded with the intent: an engine that dies mid-reset leaves a
            # row from which the next engine finishes the reset (recover()).
            record.extra["reset_to"] = target.id
            self._set_phase(record, Phase.RESETTING, extra=record.extra)
            await self._end_vm(record.id, graceful=False)
            crashpoints.reached("reset.vm_ended")
            await self._restore_for_reset(record, target)
            await self._events.emit(record.id, "reset", template=target.id)
        self.collect_garbage()
        return record

    async def _restore_for_reset(self, record: SandboxRecord, target: TemplateRecord) -> None:
        """The second half of a reset: a fresh restore of target in place of the old VM."""
        self._drop_private_memory(record)
        self._drop_top_disk(record)
        try:
            new_vm = await self._launch_target(record, target, Path(target.disk_path))
            crashpoints.reached("reset.launched")
            record.extra["disk_base"] = target.id
            record.extra["origin"] = record.extra.get("origin") or target.id
            record.extra.pop("reset_to", None)
            self._store.update_sandbox(record.id, extra=record.extra)
            await self._complete_restore(record, new_vm, Path(target.state_path))
        except BaseException:
            failed = self._vms.pop(record.id, None)
            if failed is not None:
                await failed.kill()
            self._set_phase(record, Phase.FAILED, error="reset failed", pid=None)
            raise

    def delete_snapshot(self, name: str) -> TemplateRecord:
        template = self.snapshot_by_name(name)
        users = self.snapshot_dependents(template.id)
        if users:
            raise GroveError(
                "snapshot_in_use",
                f"snapshot {name} is still needed by {', '.join(users)}",
                "terminate those sandboxes (or reset them elsewhere) first",
            )
        self._drop_template(template.id)
        self.collect_garbage()
        return template

    def _drop_template(self, template_id: str) -> None:
        template = self._store.get_template(template_id)
        if template is None:
            return
        Path(template.mem_path).unlink(missing_ok=True)
        shutil.rmtree(self._paths.template_dir(template_id), ignore_errors=True)
        # A snapshot's disk is the source's frozen layer, unless a sandbox still writes it.
        writing = {r.disk_path for r in self._store.list_sandboxes()}
        if template.kind == "snapshot" and template.disk_path not in writing:
            Path(template.disk_path).unlink(missing_ok=True)
        self._store.delete_template(template_id)

    def collect_garbage(self) -> list[str]:
        """Free what no sandbox or snapshot needs: whole snapshot templates, or just the
        memory and state of one whose frozen disk layer is still under a sandbox."""
        templates = self._store.list_templates()
        whole, disk_only = gc.needed(templates, self._store.list_sandboxes())
        freed = []
        for template in templates:
            if template.id in whole:
                continue
            if template.kind == "environment":
                if template.id not in disk_only:
                    self._templates.remove(template)
                    freed.append(template.id)
                continue
            if template.id in disk_only:
                if template.phase == "ready":
                    Path(template.mem_path).unlink(missing_ok=True)
                    shutil.rmtree(self._paths.template_dir(template.id), ignore_errors=True)
                    self._store.update_template(template.id, phase="layer")
                    freed.append(f"{template.id} (memory)")
                continue
            self._drop_template(template.id)
            freed.append(template.id)
        for template in templates:
            if template.id not in whole and template.id in {f.split()[0] for f in freed}:
                # Warm targets map the memory just freed: end them too.
                task = asyncio.get_running_loop().create_task(self._pool.drop(template.id))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        if freed:
            log.info("collected %s", ", ".join(freed))
        return freed

    async def release_template(self, template_id: str) -> None:
        await self._pool.drop(template_id)

    # supervision

    def _watch(self, sandbox_id: str, vm: Vm) -> None:
        self._watchers[sandbox_id] = asyncio.create_task(self._supervise(sandbox_id, vm))

    async def _supervise(self, sandbox_id: str, vm: Vm) -> None:
        await vm.process.wait()
        if sandbox_id in self._ending or self._vms.get(sandbox_id) is not vm:
            return
        self._vms.pop(sandbox_id, None)
        await vm.kill()
        record = self._store.get_sandbox(sandbox_id)
        if record is not None and record.phase in LIVE:
            self._set_phase(
                record, Phase.FAILED, error="the VM process exited unexpectedly", pid=None
            )
            await self._events.emit(sandbox_id, "failed", reason="vm exited")

    async def recover(self) -> None:
        """After an engine restart: re-adopt live VMs, finish or undo what the dead engine was
        doing (each -ing phase says what), then reap whatever no record claims."""
        await self.reap_unfinished_templates()
        for record in self.records():
            if record.phase not in LIVE:
                continue
            try:
                await self._recover_one(record)
            except Exception:  # one sandbox must not keep the engine from starting
                log.exception("recovering sandbox %s failed", record.id)
                with contextlib.suppress(Exception):
                    self._vms.pop(record.id, None)
                    self._set_phase(record, Phase.FAILED, error="recovery after restart failed")
        live_pids = {vm.pid for vm in self._vms.values()}
        await ownership.reap(self._paths, ownership.claims(self._store, live_pids))
        # Holes a fork filled in a template file are given back even if the engine died first.
        for template in self._store.list_templates():
            if template.phase == "ready":
                self._schedule_dig(template.mem_path, delay=0.0)

    async def _recover_one(self, record: SandboxRecord) -> None:
        if record.phase is Phase.CREATING:
            # Half-created when the engine died: nobody is waiting for it any more. Its QEMU,
            # if any, is reaped with everything else no record claims.
            self._remove_files(record)
            self._store.delete_sandbox(record.id)
            log.info("reaped half-created sandbox %s", record.id)
            return
        vm = None
        if record.pid:
            vm = await Vm.adopt(self._files(record.id), record.pid, record.pid_start)
        if record.phase is Phase.TERMINATING:
            if vm is not None:
                await vm.kill()
            self._remove_files(record)
            self._set_phase(record, Phase.TERMINATED, pid=None, pid_start=None)
            await self._events.emit(record.id, "terminated", reason="finished after restart")
            return
        if record.phase in (Phase.STOPPING, Phase.STARTING):
            # Both end stopped: the disk is kept and a start boots from it again.
            if vm is not None:
                await vm.quit() if record.phase is Phase.STOPPING else await vm.kill()
            self._drop_private_memory(record)
            self._files(record.id).remove_sockets()
            self._set_phase(record, Phase.STOPPED, pid=None, pid_start=None)
            await self._events.emit(record.id, "stopped", reason="finished after restart")
            return
        if record.phase is Phase.RESETTING:
            await self._recover_reset(record, vm)
            return
        if vm is None:
            self._remove_files_keep_disk(record)
            self._set_phase(
                record, Phase.FAILED, error="the VM process died while the engine was down",
                pid=None,
            )  # fmt: skip
            await self._events.emit(record.id, "failed", reason="vm gone after engine restart")
            return
        await self._reconcile(record, vm)
        try:
            await vm.connect_agent(10.0)
        except GroveError:
            await vm.kill()
            self._set_phase(record, Phase.FAILED, error="agent unreachable after restart")
            return
        self._vms[record.id] = vm
        self._watch(record.id, vm)
        await self._events.emit(record.id, "adopted", pid=vm.pid)
        log.info("re-adopted sandbox %s (pid %s)", record.id, vm.pid)

    async def _recover_reset(self, record: SandboxRecord, vm: Vm | None) -> None:
        """A reset the dead engine began: its old state is already gone, so finish it."""
        if vm is not None:
            await vm.kill()
        target = self._store.get_template(str(record.extra.get("reset_to", "")))
        if target is None or target.phase != "ready":
            self._remove_files_keep_disk(record)
            self._set_phase(record, Phase.FAILED, error="reset interrupted; its target is gone")
            return
        try:
            await self._restore_for_reset(record, target)
        except Exception as exc:  # the record is FAILED by now, with the cause logged
            log.warning("could not finish the reset of %s: %s", record.id, exc)
            return
        await self._events.emit(record.id, "reset", template=target.id, reason="after restart")
        log.info("finished the interrupted reset of %s", record.id)

    async def _reconcile(self, record: SandboxRecord, vm: Vm) -> None:
        """Make the record match the VM after an engine died mid-operation (e.g. a fork)."""
        actual = await vm.disk_file()
        if actual and actual != record.disk_path:
            # A capture froze the old layer; the sandbox now sits on it.
            frozen = [t for t in self._store.list_templates() if t.disk_path == record.disk_path]
            if frozen:
                record.extra["disk_base"] = frozen[0].id
            log.info("sandbox %s writes %s, not %s: adopting it", record.id, actual,
                     record.disk_path)  # fmt: skip
            record.disk_path = actual
            self._store.update_sandbox(record.id, disk_path=actual, extra=record.extra)
        if record.phase is Phase.RUNNING and await vm.status() in ("paused", "postmigrate"):
            # Paused for a capture that never finished: a source always resumes.
            await vm.resume()
            log.info("resumed sandbox %s left paused by an interrupted fork", record.id)

    async def reap_unfinished_templates(self) -> None:
        """Captures the previous engine never finished: kill their loaders, drop their files."""
        for template in self._store.list_templates():
            if template.phase != "building":
                continue
            for pid in cmdline.pids_using(template.mem_path):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            # GC after re-adoption decides whether its disk layer is still under a sandbox.
            self._store.update_template(template.id, phase="failed", name=None)
            Path(template.mem_path).unlink(missing_ok=True)
            log.info("reaped unfinished template %s", template.id)

    def _remove_files_keep_disk(self, record: SandboxRecord) -> None:
        self._drop_private_memory(record)
        self._files(record.id).remove_sockets()

    async def shutdown(self) -> None:
        """Engine stop: every VM is stopped cleanly; disks are kept, nothing is orphaned, and
        template files give back the holes forks filled."""
        for n, sandbox_id in enumerate(list(self._vms)):
            if n == 1:
                crashpoints.reached("shutdown.stopping")
            record = self._store.get_sandbox(sandbox_id)
            if record is None:
                continue
            with contextlib.suppress(Exception):
                await self.stop(sandbox_id)
        for task in self._watchers.values():
            task.cancel()
        await self._pool.close()
        await self._loaders.close()
        for timer in self._dig_timers.values():
            timer.cancel()
        self._dig_timers.clear()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await ownership.reap(self._paths, ownership.claims(self._store, set()))
        for template in self._store.list_templates():
            if template.phase == "ready":
                await capture.dig_holes(Path(template.mem_path))

    def running_count(self) -> int:
        return len(self._vms)

    def running_ids(self) -> list[str]:
        """Sandboxes this engine holds a VM for (read from memory, not the store)."""
        return list(self._vms)

    def vm(self, sandbox_id: str) -> Vm | None:
        return self._vms.get(sandbox_id)


def _validate_size(vcpus: int, mem_mib: int) -> None:
    if not 1 <= vcpus <= MAX_VCPUS:
        raise invalid(f"invalid vcpus {vcpus}", f"pass --vcpus between 1 and {MAX_VCPUS}")
    if not MIN_MEM_MIB <= mem_mib <= MAX_MEM_MIB:
        raise invalid(
            f"invalid memory size {mem_mib} MiB",
            f"pass --mem-mib between {MIN_MEM_MIB} and {MAX_MEM_MIB}",
        )


def _validate_env_key(key: str) -> None:
    if not key or "=" in key or "\0" in key or not (key[0].isalpha() or key[0] == "_"):
        raise invalid(f"invalid variable name '{key}'", "use NAME=VALUE with a shell-style NAME")


def _write_secrets(sdir: Path, secrets: dict[str, str]) -> None:
    path = sdir / "secrets.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(secrets, out)


def _read_secrets(sdir: Path) -> dict[str, str]:
    path = sdir / "secrets.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {str(k): str(v) for k, v in data.items()}


def _exec_error(exc: AgentError, argv: list[str], cwd: str | None) -> GroveError:
    fallback = GroveError("exec_failed", f"exec failed: {exc}", "check 'grove logs ID'")
    return spawn_error(exc, f"command '{argv[0]}'", cwd, fallback)


def _not_running_remedy(record: SandboxRecord) -> str:
    if record.phase is Phase.STOPPED:
        return f"start it with 'grove sandbox start {record.id}'"
    if record.phase is Phase.TERMINATED:
        return "create a new one with 'grove sandbox create ENV'"
    if record.phase is Phase.FAILED:
        return f"see 'grove logs {record.id}', then terminate it"
    return "wait for it to be running; see 'grove sandbox ls'"
