"""Services per sandbox: start (returning once ready), stop, status, list, logs.

Definitions and run state are persisted, so an engine restart re-binds each service to its
guest process (the agent kept it) instead of starting it again. Logs live on the host under
``$GROVE_HOME/logs/<sandbox-id>/`` and outlive the sandbox. A sandbox restored from another's
memory (a fork child, a sandbox created from a snapshot) runs that one's services too: it gets
copies of their definitions, new host-side supervisors, and ports published on its own QEMU.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from engine.agent.client import AgentClient, AgentError
from engine.agent.errors import spawn_error
from engine.config import Paths
from engine.errors import GroveError
from engine.net.ports import PublishedPort
from engine.sandbox.events import EventLog
from engine.sandbox.manager import Sandboxes
from engine.secrets.keeper import SecretKeeper
from engine.services.logs import LogLine, ServiceLog
from engine.services.service import BACKOFF, FAILED, STOPPED, NotReady, Service, ServiceStatus
from engine.services.spec import ServiceSpec, validate_name
from engine.sessions.table import SessionTable
from engine.sessions.watch import SandboxWatch
from engine.store.records import SandboxRecord
from engine.vmm.vm import Vm

log = logging.getLogger(__name__)

KIND = "service"
#: Lines per message when replaying a log.
BATCH = 500
#: Beyond the probe's own deadline, how long a start waits (restarts in backoff, slow replies).
READY_SLACK_S = 15.0


class Services:
    def __init__(
        self,
        paths: Paths,
        sandboxes: Sandboxes,
        table: SessionTable,
        events: EventLog,
        watch: SandboxWatch,
        secrets: SecretKeeper,
    ) -> None:
        self._secrets = secrets
        self._paths = paths
        self._sandboxes = sandboxes
        self._table = table
        self._events = events
        self._watch = watch
        self._services: dict[str, dict[str, Service]] = {}
        self._logs: dict[tuple[str, str], ServiceLog] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._considered: set[str] = set()
        watch.add_owner(self)

    # -- objects and persistence -------------------------------------------------------------

    def log_dir(self, sandbox_id: str) -> Path:
        return self._paths.home / "logs" / sandbox_id

    def _log(self, sandbox_id: str, name: str) -> ServiceLog:
        key = (sandbox_id, name)
        if key not in self._logs:
            self._logs[key] = ServiceLog(self.log_dir(sandbox_id), name, self._secrets.redactor)
        return self._logs[key]

    def _make(self, sandbox_id: str, spec: ServiceSpec, status: ServiceStatus) -> Service:
        def environment() -> dict[str, str]:
            # Only the secrets the service asked for, read at each (re)start.
            return {**spec.env, **self._secrets.env(sandbox_id, spec.secret_env)}

        def current_agent() -> AgentClient | None:
            vm = self._sandboxes.vm(sandbox_id)
            return vm.agent if vm is not None else None

        service = Service(
            sandbox_id,
            spec,
            status,
            self._log(sandbox_id, spec.name),
            environment=environment,
            current_agent=current_agent,
            on_change=self._save,
            emit=self._events.emit,
        )
        self._services.setdefault(sandbox_id, {})[spec.name] = service
        return service

    def _save(self, service: Service) -> None:
        data = {"spec": service.spec.to_dict(), "status": service.status.to_dict()}
        self._table.put(service.sandbox_id, KIND, service.name, data)

    def recover(self) -> None:
        """Load the table after an engine start; the watch re-binds what still runs."""
        for sandbox_id, data in self._table.all_rows(KIND):
            try:
                spec = ServiceSpec.from_dict(data["spec"])
                status = ServiceStatus.from_dict(data.get("status") or {})
            except (KeyError, TypeError, ValueError):
                log.warning("skipping an unreadable service row of %s", sandbox_id)
                continue
            self._make(sandbox_id, spec, status)

    async def _live(self, ref: str) -> tuple[SandboxRecord, Vm, AgentClient]:
        record, _ = self._sandboxes.live_vm(ref)
        await self._watch.ensure(record.id)
        record, vm = self._sandboxes.live_vm(record.id)
        assert vm.agent is not None
        return record, vm, vm.agent

    def _find(self, sandbox_id: str, name: str) -> Service:
        validate_name(name)
        service = self._services.get(sandbox_id, {}).get(name)
        if service is None:
            raise GroveError(
                "service_not_found",
                f"no service '{name}' in sandbox {sandbox_id}",
                f"list services with 'grove service ls {sandbox_id}'",
            )
        return service

    async def _current(self, ref: str) -> SandboxRecord:
        record = self._sandboxes.get(ref)
        await self._watch.ensure(record.id)
        return record

    # -- API ---------------------------------------------------------------------------------

    async def start(self, ref: str, spec: ServiceSpec) -> Service:
        spec.validate()
        record, vm, agent = await self._live(ref)
        self._secrets.env(record.id, spec.secret_env)  # unknown names fail before anything
        lock = self._locks.setdefault((record.id, spec.name), asyncio.Lock())
        async with lock:
            existing = self._services.get(record.id, {}).get(spec.name)
            if existing is not None and existing.alive:
                raise GroveError(
                    "service_exists",
                    f"service '{spec.name}' is already {existing.status.state} in {record.id}",
                    f"stop it first with 'grove service stop {record.id} {spec.name}'",
                )
            ports: list[PublishedPort] = []
            try:
                for request in spec.publish:
                    ports.append(await vm.net.publish(request.guest_port, request.host_port))
            except BaseException:
                for port in ports:
                    await vm.net.unpublish(port)
                raise
            status = ServiceStatus(ports=[p.to_dict() for p in ports])
            service = self._make(record.id, spec, status)
            waiter = service.expect_ready()
            try:
                await service.spawn(agent)
            except AgentError as exc:
                await self._release_ports(service)
                service.status.state = FAILED
                service.status.error = exc.message
                self._save(service)
                raise _spawn_error(exc, spec) from exc
        # Waiting for readiness holds no lock: a stop may come meanwhile (a second start of
        # the same name is refused, the service being alive).
        try:
            await asyncio.wait_for(waiter, spec.ready_timeout_s + READY_SLACK_S)
        except (NotReady, TimeoutError) as exc:
            if service.status.state == STOPPED:
                raise GroveError(
                    "service_stopped",
                    f"service '{spec.name}' was stopped before it became ready",
                    f"start it again with 'grove service start {record.id} {spec.name} ...'",
                ) from None
            reason = str(exc) or f"not ready after {spec.ready_timeout_s:g}s: " + (
                service.last_probe_error or "no answer"
            )
            async with lock:
                await service.stop(grace_s=2.0)
                await self._release_ports(service)
            service.status.state = FAILED
            service.status.error = reason
            self._save(service)
            await self._events.emit(record.id, "service_failed", service=spec.name, error=reason)
            raise service.not_ready_error(reason) from None
        return service

    async def stop(self, ref: str, name: str) -> Service:
        record = await self._current(ref)
        service = self._find(record.id, name)
        async with self._locks.setdefault((record.id, name), asyncio.Lock()):
            if service.alive:
                await service.stop()
            await self._release_ports(service)
        return service

    async def status(self, ref: str, name: str) -> Service:
        record = await self._current(ref)
        return self._find(record.id, name)

    async def in_sandbox(self, ref: str) -> list[Service]:
        record = await self._current(ref)
        return sorted(self._services.get(record.id, {}).values(), key=lambda s: s.name)

    async def logs(
        self,
        ref: str,
        name: str,
        tail: int | None = None,
        since: float | None = None,
        follow: bool = False,
    ) -> AsyncIterator[list[LogLine]]:
        """Batches of lines: the history asked for, then (follow) new ones until it ends."""
        validate_name(name)
        record = self._sandboxes.get(ref)  # any phase: logs outlive the sandbox
        service = self._services.get(record.id, {}).get(name)
        logfile = self._log(record.id, name)
        if service is None and not logfile.files():
            self._find(record.id, name)  # raises service_not_found
        seq = logfile.last_seq
        history = logfile.read(tail=tail, since=since)
        for i in range(0, len(history), BATCH):
            yield history[i : i + BATCH]
        while follow:
            lines, _ = logfile.since_seq(seq)
            if lines:
                seq = lines[-1].seq
                for i in range(0, len(lines), BATCH):
                    yield lines[i : i + BATCH]
                continue
            service = self._services.get(record.id, {}).get(name)
            if service is None or not service.alive:
                return
            await logfile.wait(timeout=1.0)

    async def _release_ports(self, service: Service) -> None:
        ports = service.status.published
        if not ports:
            return
        vm = self._sandboxes.vm(service.sandbox_id)
        if vm is not None:
            for port in ports:
                await vm.net.unpublish(port)
        service.status.ports = []
        self._save(service)

    # -- the watch ---------------------------------------------------------------------------

    def active_sandboxes(self) -> set[str]:
        return {sid for sid, svcs in self._services.items() if any(s.alive for s in svcs.values())}

    async def agent_changed(self, record: SandboxRecord, vm: Vm, agent: AgentClient) -> None:
        assert agent.hello is not None
        listed = {s.channel for s in agent.hello.sessions if s.kind == "exec" and not s.pty}
        inherited: list[Service] = []
        if not self._services.get(record.id) and record.id not in self._considered:
            inherited = self._inherit(record, listed)
        self._considered.add(record.id)
        for service in list(self._services.get(record.id, {}).values()):
            if not service.alive or service.status.state == BACKOFF:
                continue  # a pending restart asks for the current agent when it fires
            if service.status.channel not in listed:
                service.lost("its process is gone (the guest restarted or was restored)")
                await self._events.emit(record.id, "service_lost", service=service.name)
                continue
            try:
                handle = await agent.attach(service.status.channel)
            except AgentError as exc:
                log.warning("cannot re-attach service %s: %s", service.name, exc)
                service.lost(f"cannot re-attach: {exc.message}")
                continue
            service.rebind(agent, handle)
            log.info("re-attached service %s of %s (pid %s)", service.name, record.id, handle.pid)
        for service in inherited:
            await self._republish(vm, service)

    def _inherit(self, record: SandboxRecord, channels: set[int]) -> list[Service]:
        source = self._watch.source_of(record)
        if source is None or not channels:
            return []
        copies = []
        for parent in self._services.get(source, {}).values():
            if parent.alive and parent.status.channel in channels:
                status = ServiceStatus.from_dict(parent.status.to_dict())
                status.forked_from = source
                # The child's log starts as a copy of the parent's: same process, same past.
                parent.log.copy_to(self.log_dir(record.id))
                copies.append(self._make(record.id, parent.spec, status))
                copies[-1].log.note(f"forked from {source}")
        return copies

    async def _republish(self, vm: Vm, service: Service) -> None:
        """A child's QEMU has none of its parent's forwards: publish again on free ports (the
        parent keeps the ones it had)."""
        old = service.status.published
        service.status.ports = []
        for port in old:
            try:
                new = await vm.net.publish(port.guest_port)
            except GroveError as exc:
                service.log.note(f"cannot publish guest port {port.guest_port}: {exc.message}")
                continue
            service.status.ports.append(new.to_dict())
            service.log.note(f"published guest port {new.guest_port} on {new.host}:{new.host_port}")
        self._save(service)

    async def sandbox_gone(self, sandbox_id: str, record: SandboxRecord | None) -> None:
        phase = record.phase.value if record is not None else "gone"
        for service in self._services.get(sandbox_id, {}).values():
            if service.alive:
                service.lost(f"the sandbox is {phase}")
                service.status.ports = []  # they belonged to its QEMU
                self._save(service)

    async def shutdown(self) -> None:
        for services in self._services.values():
            for service in services.values():
                service.detach()
        for logfile in self._logs.values():
            logfile.close()


def _spawn_error(exc: AgentError, spec: ServiceSpec) -> GroveError:
    fallback = GroveError("service_failed", f"cannot start service '{spec.name}': {exc}", "retry")
    return spawn_error(exc, f"command '{spec.argv[0]}'", spec.cwd, fallback)
