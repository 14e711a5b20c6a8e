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
from collections.abc import Callable
from pathlib import Path

from engine.agent.client import AgentClient, AgentError, ExecHandle
from engine.config import DEFAULT_MEM_MIB, DEFAULT_VCPUS, MAX_MEM_MIB, MAX_VCPUS, MIN_MEM_MIB, Paths
from engine.errors import GroveError, invalid
from engine.images import disks, environments
from engine.images.templates import AGENT_BOOT_TIMEOUT, Templates
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
    ) -> SandboxRecord:
        cmdline.qemu_binary()  # fail first, with the install hint, when QEMU is missing
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
        await self._events.emit(record.id, "created", environment=environment)
        return record

    async def _restore(self, record: SandboxRecord, template: TemplateRecord) -> None:
        t0 = time.monotonic()
        marks: list[tuple[str, float]] = []

        def mark(step: str) -> None:
            marks.append((step, (time.monotonic() - t0) * 1000))

        files = self._files(record.id)
        disk = self._paths.sandbox_dir(record.id) / "disk.qcow2"
        await disks.create_overlay(disk, Path(template.disk_path))
        mark("overlay")
        spec = cmdline.VmSpec(
            accel=self._accel,
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
        )
        vm = await Vm.launch(spec, files)
        mark("launch")
        self._vms[record.id] = vm
        self._store.update_sandbox(
            record.id,
            pid=vm.pid,
            pid_start=vm.process.start,
            mem_path=template.mem_path,
            disk_path=str(disk),
        )
        await vm.restore(Path(template.state_path))
        mark("restore")
        agent = await vm.connect_agent(AGENT_RESTORE_TIMEOUT)
        mark("agent")
        await self._new_identity(record, agent)
        mark("identity")
        self._set_phase(record, Phase.RUNNING, pid=vm.pid)
        self._watch(record.id, vm)
        log.info("restored %s: %s", record.id, " ".join(f"{s}={ms:.0f}" for s, ms in marks))

    async def _new_identity(self, record: SandboxRecord, agent: AgentClient) -> None:
        """A restored guest is a copy: reseed its RNG, step its clock, give it its own name."""
        reply = await agent.restore_identity(os.urandom(64), time.time_ns(), record.name)
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
            check_transition(record.id, record.phase, Phase.STOPPED)
            vm = self._vms.pop(record.id, None)
            if vm is not None:
                self._ending.add(record.id)
                try:
                    await vm.quit()
                finally:
                    self._ending.discard(record.id)
            self._drop_private_memory(record)
            self._set_phase(record, Phase.STOPPED, pid=None, pid_start=None)
            await self._events.emit(record.id, "stopped")
            return record

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
            )
            self._set_phase(record, Phase.CREATING, mem_path=str(mem_path))
            try:
                vm = await Vm.launch(spec, files)
                self._vms[record.id] = vm
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
            vm = self._vms.pop(record.id, None)
            if vm is not None:
                self._ending.add(record.id)
                try:
                    await vm.kill()
                finally:
                    self._ending.discard(record.id)
            self._remove_files(record)
            self._set_phase(record, Phase.TERMINATED, pid=None, pid_start=None)
            await self._events.emit(record.id, "terminated")
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
        shutil.rmtree(self._paths.sandbox_dir(record.id), ignore_errors=True)
        self._files(record.id).remove_sockets()

    def _drop_private_memory(self, record: SandboxRecord) -> None:
        # A cold-booted sandbox owns its memory file; a restored one maps its template's.
        own = self._paths.memory_dir / f"{record.id}.mem"
        own.unlink(missing_ok=True)

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
        """After an engine restart: re-adopt live VMs, fail the dead, reap half-made ones."""
        for record in self.records():
            if record.phase not in LIVE:
                continue
            files = self._files(record.id)
            vm = None
            if record.pid:
                vm = await Vm.adopt(files, record.pid, record.pid_start)
            if record.phase is Phase.CREATING:
                # Half-created when the engine died: nobody is waiting for it any more.
                if vm is not None:
                    await vm.kill()
                self._remove_files(record)
                self._store.delete_sandbox(record.id)
                log.info("reaped half-created sandbox %s", record.id)
                continue
            if vm is None:
                self._remove_files_keep_disk(record)
                self._set_phase(
                    record,
                    Phase.FAILED,
                    error="the VM process died while the engine was down",
                    pid=None,
                )
                await self._events.emit(record.id, "failed", reason="vm gone after engine restart")
                continue
            try:
                await vm.connect_agent(10.0)
            except GroveError:
                await vm.kill()
                self._set_phase(record, Phase.FAILED, error="agent unreachable after restart")
                continue
            self._vms[record.id] = vm
            self._watch(record.id, vm)
            await self._events.emit(record.id, "adopted", pid=vm.pid)
            log.info("re-adopted sandbox %s (pid %s)", record.id, vm.pid)

    def _remove_files_keep_disk(self, record: SandboxRecord) -> None:
        self._drop_private_memory(record)
        self._files(record.id).remove_sockets()

    async def shutdown(self) -> None:
        """Engine stop: every VM is stopped cleanly; disks are kept, nothing is orphaned."""
        for sandbox_id in list(self._vms):
            record = self._store.get_sandbox(sandbox_id)
            if record is None:
                continue
            with contextlib.suppress(Exception):
                await self.stop(sandbox_id)
        for task in self._watchers.values():
            task.cancel()

    def running_count(self) -> int:
        return len(self._vms)

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
    if exc.code == "not_found":
        return GroveError(
            "command_not_found",
            f"command '{argv[0]}' not found in the sandbox",
            "check the name or install it in the environment",
        )
    if exc.code == "bad_cwd":
        return GroveError(
            "bad_cwd",
            f"working directory '{cwd}' does not exist in the sandbox",
            "pass an existing --cwd",
        )
    return GroveError("exec_failed", f"exec failed: {exc}", "check 'grove logs ID'")


def _not_running_remedy(record: SandboxRecord) -> str:
    if record.phase is Phase.STOPPED:
        return f"start it with 'grove sandbox start {record.id}'"
    if record.phase is Phase.TERMINATED:
        return "create a new one with 'grove sandbox create ENV'"
    if record.phase is Phase.FAILED:
        return f"see 'grove logs {record.id}', then terminate it"
    return "wait for it to be running; see 'grove sandbox ls'"
