"""A sandbox's life: create (a restore of its environment's template or of a snapshot), exec,
stop and start (its disk kept), reset, terminate. Each change of phase goes through SandboxVms;
the -ing phases record the intent first, so recovery can finish what a crash interrupted."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from engine import crashpoints
from engine.agent.client import AgentError, ExecHandle
from engine.agent.errors import spawn_error
from engine.config import DEFAULT_MEM_MIB, DEFAULT_VCPUS, MAX_MEM_MIB, MAX_VCPUS, MIN_MEM_MIB, Paths
from engine.errors import GroveError, invalid
from engine.fork.collector import Collector
from engine.images import environments
from engine.images.templates import AGENT_BOOT_TIMEOUT, Templates
from engine.net.networks import Networks
from engine.sandbox.events import EventLog
from engine.sandbox.naming import new_sandbox_id, validate_name
from engine.sandbox.phase import Phase
from engine.sandbox.restore import Restorer, new_identity
from engine.sandbox.vms import SandboxVms, not_running_remedy
from engine.secrets import spec as secret_spec
from engine.secrets.keeper import SecretKeeper
from engine.store.db import Store
from engine.store.records import SandboxRecord, TemplatePhase, TemplateRecord
from engine.vmm import cmdline
from engine.vmm.accel import Accelerator
from engine.vmm.vm import Vm, boot_spec

log = logging.getLogger(__name__)

ImageLoader = Callable[[str], asyncio.Task[environments.EnvironmentImage]]


class Lifecycle:
    def __init__(
        self,
        paths: Paths,
        store: Store,
        accel: Accelerator,
        templates: Templates,
        events: EventLog,
        load_image: ImageLoader,
        vms: SandboxVms,
        restorer: Restorer,
        collector: Collector,
        networks: Networks,
        secrets: SecretKeeper,
    ) -> None:
        self._networks = networks
        self._secrets = secrets
        self._paths = paths
        self._store = store
        self._accel = accel
        self._templates = templates
        self._events = events
        self._load_image = load_image
        self._vms = vms
        self._restorer = restorer
        self._collector = collector

    # create

    async def create(
        self,
        environment: str,
        name: str = "",
        vcpus: int = 0,
        mem_mib: int = 0,
        secret_values: dict[str, str] | None = None,
        from_snapshot: str = "",
        network: str = "",
    ) -> SandboxRecord:
        cmdline.qemu_binary()
        secret_spec.validate_values(secret_values or {})  # before anything is made
        policy = self._networks.policy_of(
            network
        )  # fail first, with the install hint, when QEMU is missing
        snapshot = self._collector.snapshot_by_name(from_snapshot) if from_snapshot else None
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
            secrets=bool(secret_values) or bool(snapshot and snapshot.secret_digests),
            network=str(policy),
        )
        self._store.insert_sandbox(record)
        crashpoints.reached("create.recorded")
        try:
            sdir = self._paths.sandbox_dir(sandbox_id)
            sdir.mkdir(parents=True, mode=0o700)
            if record.secrets:
                # A snapshot's memory holds its secrets: the sandbox owns copies, plus any new.
                inherited = self._secrets.values(template.id) if snapshot is not None else {}
                record.secret_digests = self._secrets.put(
                    sandbox_id, {**inherited, **(secret_values or {})}
                )
                self._store.update_sandbox(sandbox_id, secret_digests=record.secret_digests)
            await self._restorer.restore(record, template)
            if record.secrets:
                _, vm = self._vms.live_vm(record.id)
                assert vm.agent is not None
                await self._secrets.install(record.id, vm.agent)
        except BaseException as exc:
            await self._vms.discard(record)
            if isinstance(exc, AgentError):
                raise GroveError(
                    "create_failed", f"sandbox did not come up: {exc}", "see 'grove doctor'"
                ) from exc
            raise
        record.create_ms = round((time.monotonic() - started) * 1000, 1)
        self._store.update_sandbox(record.id, create_ms=record.create_ms)
        crashpoints.reached("create.running")
        await self._events.emit(record.id, "created", environment=environment, template=template.id)
        return record

    # exec

    async def exec(
        self,
        ref: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        timeout_s: float | None = None,
        stdin: bool = False,
        secret_env: list[str] | None = None,
    ) -> tuple[SandboxRecord, ExecHandle]:
        """secret_env: NAME or NAME=VARIABLE of the secrets this command gets as variables
        (no other secret is in its environment)."""
        if not argv or not argv[0]:
            raise invalid("no command given", "put the command after '--', e.g. -- uname -a")
        if timeout_s is not None and timeout_s < 0:
            raise invalid(f"invalid timeout {timeout_s}", "pass a positive number of seconds")
        for key in env or {}:
            secret_spec.validate_variable(key)
        record, vm = self._vms.live_vm(ref)
        assert vm.agent is not None
        merged = {**(env or {}), **self._secrets.env(record.id, secret_env or [])}
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
        _, vm = self._vms.live_vm(ref)
        assert vm.agent is not None
        return float(await vm.agent.ping())

    # stop, start, terminate

    async def stop(self, ref: str) -> SandboxRecord:
        record = self._vms.get(ref)
        async with self._vms.lock(record.id):
            record = self._vms.get(record.id)
            self._vms.set_phase(record, Phase.STOPPING)
            await self._vms.end(record.id, graceful=True)
            crashpoints.reached("stop.vm_ended")
            self._vms.drop_private_memory(record)
            self._vms.set_phase(record, Phase.STOPPED, pid=None, pid_start=None)
            await self._events.emit(record.id, "stopped")
            return record

    async def start(self, ref: str) -> SandboxRecord:
        """Cold-boot a stopped sandbox from its own disk (its memory was not kept)."""
        record = self._vms.get(ref)
        async with self._vms.lock(record.id):
            record = self._vms.get(record.id)
            if record.phase is not Phase.STOPPED:
                raise GroveError(
                    "invalid_phase",
                    f"sandbox {record.id} is {record.phase.value}; only a stopped one can start",
                    not_running_remedy(record)
                    if record.phase is not Phase.RUNNING
                    else "it is already running",
                )
            image = await self._load_image(record.environment)
            boot = environments.boot_args(image, hostname=record.name)
            files = self._vms.files(record.id)
            mem_path = self._paths.memory_dir / f"{record.id}.mem"
            mem_path.unlink(missing_ok=True)
            spec = boot_spec(
                self._accel, record.vcpus, record.mem_mib, mem_path, Path(record.disk_path),
                files, boot, self._paths.vm_tag(record.id),
            )  # fmt: skip
            self._vms.set_phase(record, Phase.STARTING, mem_path=str(mem_path), boot=boot)
            try:
                policy = self._networks.policy_of(record.network)
                net = await self._networks.attach(record.id, policy)
                vm = await Vm.launch(spec, files, net=net)
                self._vms.hold(record.id, vm)
                crashpoints.reached("start.spawned")
                self._store.update_sandbox(record.id, pid=vm.pid, pid_start=vm.process.start)
                agent = await vm.connect_agent(AGENT_BOOT_TIMEOUT)
                await new_identity(record, agent)
                await self._secrets.install(record.id, agent)  # a cold boot's /run is empty
            except BaseException:
                failed = self._vms.release(record.id)
                if failed is not None:
                    await failed.kill()
                mem_path.unlink(missing_ok=True)
                self._vms.set_phase(record, Phase.FAILED, error="cold boot failed", pid=None)
                raise
            self._vms.set_phase(record, Phase.RUNNING, pid=vm.pid)
            self._vms.supervise(record.id, vm)
            await self._events.emit(record.id, "started")
            return record

    async def terminate(self, ref: str) -> SandboxRecord:
        record = self._vms.get(ref)
        async with self._vms.lock(record.id):
            record = self._vms.get(record.id)
            if record.phase is Phase.TERMINATED:
                raise GroveError(
                    "already_terminated",
                    f"sandbox {record.id} is already terminated",
                    "list live sandboxes with 'grove sandbox ls'",
                )
            await self.finish_terminate(record)
        self._collector.collect()
        return record

    async def finish_terminate(self, record: SandboxRecord) -> None:
        """From any phase: intent first, then the VM, then its files (recovery resumes here)."""
        if record.phase is not Phase.TERMINATING:
            self._vms.set_phase(record, Phase.TERMINATING)
        await self._vms.end(record.id, graceful=False)
        crashpoints.reached("terminate.vm_ended")
        self._vms.remove_files(record)
        crashpoints.reached("terminate.files_removed")
        self._vms.set_phase(record, Phase.TERMINATED, pid=None, pid_start=None)
        await self._events.emit(record.id, "terminated")

    async def terminate_all(self) -> list[SandboxRecord]:
        live = [r for r in self._vms.records() if r.phase is not Phase.TERMINATED]
        return list(await asyncio.gather(*(self.terminate(r.id) for r in live)))

    # reset

    async def reset(self, ref: str, snapshot_name: str = "") -> SandboxRecord:
        """Throw away the sandbox's state and restore it from a snapshot (default: how it
        was created). Same id, same name; a new VM process."""
        record = self._vms.get(ref)
        target = (
            self._collector.snapshot_by_name(snapshot_name)
            if snapshot_name
            else self._store.get_template(record.origin or record.template_id or "")
        )
        if target is None or target.phase is not TemplatePhase.READY:
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
        async with self._vms.lock(record.id):
            record = self._vms.get(record.id)
            if record.phase not in (Phase.RUNNING, Phase.STOPPED, Phase.PAUSED):
                raise GroveError(
                    "invalid_phase", f"sandbox {record.id} is {record.phase.value}",
                    not_running_remedy(record),
                )  # fmt: skip
            # The target is recorded with the intent: an engine that dies mid-reset leaves a
            # row from which the next engine finishes the reset.
            self._vms.set_phase(record, Phase.RESETTING, reset_to=target.id)
            await self._vms.end(record.id, graceful=False)
            crashpoints.reached("reset.vm_ended")
            await self.finish_reset(record, target)
            await self._events.emit(record.id, "reset", template=target.id)
        self._collector.collect()
        return record

    async def finish_reset(self, record: SandboxRecord, target: TemplateRecord) -> None:
        """The second half of a reset: a fresh restore of target in place of the old VM."""
        self._vms.drop_private_memory(record)
        self._vms.drop_top_disk(record)
        try:
            await self._restorer.restore(record, target, launched="reset.launched")
        except BaseException:
            failed = self._vms.release(record.id)
            if failed is not None:
                await failed.kill()
            self._vms.set_phase(record, Phase.FAILED, error="reset failed", pid=None)
            raise


def _validate_size(vcpus: int, mem_mib: int) -> None:
    if not 1 <= vcpus <= MAX_VCPUS:
        raise invalid(f"invalid vcpus {vcpus}", f"pass --vcpus between 1 and {MAX_VCPUS}")
    if not MIN_MEM_MIB <= mem_mib <= MAX_MEM_MIB:
        raise invalid(
            f"invalid memory size {mem_mib} MiB",
            f"pass --mem-mib between {MIN_MEM_MIB} and {MAX_MEM_MIB}",
        )


def _exec_error(exc: AgentError, argv: list[str], cwd: str | None) -> GroveError:
    fallback = GroveError("exec_failed", f"exec failed: {exc}", "check 'grove logs ID'")
    return spawn_error(exc, f"command '{argv[0]}'", cwd, fallback)
