"""One service: its guest process supervised from the engine.

The process is an ordinary exec session in the guest. The engine reads its output into the
host log, runs the readiness probe, and on a failing exit restarts it when the policy says so.
The guest session outlives the engine's connection, so a new connection (engine restart,
restore, fork child) re-binds the same process with ``rebind`` instead of starting another.

States: ``starting`` (running, probe not passed), ``running`` (ready), ``backoff`` (failed,
restart pending), ``exited`` (status 0), ``failed``, ``stopped`` (by request, or its guest
went away).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.agent.client import AgentClient, AgentError, ExecHandle, ExitStatus
from engine.errors import GroveError
from engine.net.ports import PublishedPort
from engine.services import probes
from engine.services.logs import STREAMS, LineSplitter, ServiceLog
from engine.services.spec import ServiceSpec

log = logging.getLogger(__name__)

STARTING = "starting"
RUNNING = "running"
BACKOFF = "backoff"
EXITED = "exited"
FAILED = "failed"
STOPPED = "stopped"
ENDED = frozenset({EXITED, FAILED, STOPPED})

#: A partial line (a prompt, a progress bar) is logged after this long without its newline.
PARTIAL_FLUSH_S = 0.5
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
#: A process that ran this long before failing starts the backoff over.
BACKOFF_RESET_S = 10.0
STOP_GRACE_S = 5.0
KILL_WAIT_S = 5.0

Emit = Callable[..., Coroutine[Any, Any, None]]


class NotReady(Exception):
    """The service did not become ready: why, in one line."""


@dataclass
class ServiceStatus:
    """What is persisted about a service's current run."""

    state: str = STARTING
    pid: int = 0
    channel: int = 0
    ready: bool = False
    restarts: int = 0
    exit_code: int | None = None
    signal: str | None = None
    error: str = ""
    started_at: float = 0.0
    ready_at: float | None = None
    ready_ms: float | None = None
    ports: list[dict[str, Any]] = field(default_factory=list)
    forked_from: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServiceStatus:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def published(self) -> list[PublishedPort]:
        return [PublishedPort.from_dict(p) for p in self.ports]


def describe_exit(status: ExitStatus) -> str:
    if status.exit_code is not None:
        return f"exit code {status.exit_code}"
    return f"signal {status.signal}"


class Service:
    def __init__(
        self,
        sandbox_id: str,
        spec: ServiceSpec,
        status: ServiceStatus,
        logfile: ServiceLog,
        *,
        environment: Callable[[], dict[str, str]],
        current_agent: Callable[[], AgentClient | None],
        on_change: Callable[[Service], None],
        emit: Emit,
    ) -> None:
        self.sandbox_id = sandbox_id
        self.spec = spec
        self.status = status
        self.log = logfile
        self._environment = environment
        self._current_agent = current_agent
        self._on_change = on_change
        self._emit = emit
        self._handle: ExecHandle | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._prober: asyncio.Task[None] | None = None
        self._stopping = False
        self._ready_waiter: asyncio.Future[None] | None = None
        self._start_deadline = 0.0
        #: Log position when this start began: its failure report shows only its own lines.
        self._start_seq = 0
        self._backoff_s = BACKOFF_FIRST_S
        self._spawned_at = 0.0
        self.last_probe_error = ""
        self._background: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def alive(self) -> bool:
        """Believed to have (or to be about to have) a process in the guest."""
        return self.status.state not in ENDED

    def _changed(self) -> None:
        self._on_change(self)

    def _event(self, kind: str, **detail: Any) -> None:
        # Tasks start in creation order and emit() stores before its first await: order holds.
        task = asyncio.create_task(self._emit(self.sandbox_id, kind, service=self.name, **detail))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- starting ----------------------------------------------------------------------------

    async def spawn(self, agent: AgentClient) -> None:
        """Start a new process (AgentError when the guest refuses: not found, bad cwd)."""
        env = self._environment()
        handle = await agent.exec(self.spec.argv, env=env or None, cwd=self.spec.cwd or None)
        self._spawned_at = time.monotonic()
        self.status.started_at = time.time()
        self.status.exit_code = None
        self.status.signal = None
        self.status.error = ""
        self.status.ready = False
        self.status.ready_at = None
        self.status.ready_ms = None
        self.log.note(f"started pid {handle.pid}")
        self._event("service_started", pid=handle.pid, restarts=self.status.restarts)
        self._begin(agent, handle)

    def expect_ready(self) -> asyncio.Future[None]:
        """A future for the first readiness of the next spawn (NotReady when it fails)."""
        loop = asyncio.get_running_loop()
        self._ready_waiter = loop.create_future()
        self._ready_waiter.add_done_callback(_consume)
        # One deadline for the whole start, across restarts of a crashing process.
        self._start_deadline = loop.time() + self.spec.ready_timeout_s
        self._start_seq = self.log.last_seq
        return self._ready_waiter

    def rebind(self, agent: AgentClient, handle: ExecHandle) -> None:
        """The same guest process, through a new connection."""
        self._spawned_at = time.monotonic()
        self._begin(agent, handle)

    def _begin(self, agent: AgentClient, handle: ExecHandle) -> None:
        self._cancel_tasks()
        self._handle = handle
        self.status.pid = handle.pid
        self.status.channel = handle.channel
        if self.spec.probe is None:
            self._mark_ready(announce=not self.status.ready)
        elif not self.status.ready:
            self.status.state = STARTING
            deadline = asyncio.get_running_loop().time() + self.spec.ready_timeout_s
            if self._ready_waiter is not None and not self._ready_waiter.done():
                deadline = self._start_deadline
            self._prober = asyncio.create_task(self._probe(agent, handle, deadline))
        else:
            self.status.state = RUNNING
        self._changed()
        self._supervisor = asyncio.create_task(self._supervise(handle), name=f"svc-{self.name}")

    def _mark_ready(self, announce: bool = True) -> None:
        first = not self.status.ready
        self.status.ready = True
        self.status.state = RUNNING
        if first:
            self.status.ready_at = time.time()
            self.status.ready_ms = round((time.monotonic() - self._spawned_at) * 1000, 1)
        self._changed()
        if self._ready_waiter is not None and not self._ready_waiter.done():
            self._ready_waiter.set_result(None)
        if announce and self.spec.probe is not None:
            self.log.note(f"ready ({self.spec.probe.describe()}) in {self.status.ready_ms} ms")
            self._event("service_ready", ready_ms=self.status.ready_ms)

    def _not_ready(self, reason: str) -> None:
        if self._ready_waiter is not None and not self._ready_waiter.done():
            self._ready_waiter.set_exception(NotReady(reason))

    async def _probe(self, agent: AgentClient, handle: ExecHandle, deadline: float) -> None:
        assert self.spec.probe is not None
        loop = asyncio.get_running_loop()
        interval = self.spec.interval_ms / 1000
        while self._handle is handle and not handle.exited:
            error = await probes.check(
                agent, self.spec.probe, deadline - loop.time(), self._environment(), self.spec.cwd
            )
            if self._handle is not handle or handle.exited:
                return
            if not error:
                self._mark_ready()
                return
            self.last_probe_error = error
            remaining = deadline - loop.time()
            if remaining <= 0:
                reason = f"not ready after {self.spec.ready_timeout_s:g}s: {error}"
                self.status.error = reason
                self.log.note(reason)
                self._changed()
                self._not_ready(reason)
                return
            await asyncio.sleep(min(interval, remaining))

    # -- running -----------------------------------------------------------------------------

    async def _supervise(self, handle: ExecHandle) -> None:
        try:
            status = await self._pump(handle)
        except AgentError as exc:
            # The connection went, maybe not the process: the watch re-binds or ends us.
            log.debug("service %s lost its connection: %s", self.name, exc)
            if self._handle is handle:
                self._handle = None
            return
        if self._handle is handle:
            self._handle = None
        if self._prober is not None:
            self._prober.cancel()
        await self._exited(status)

    async def _pump(self, handle: ExecHandle) -> ExitStatus:
        splitters = {stream: LineSplitter() for stream in STREAMS}
        # Redacted before lines are cut, so a secret split across chunks is still caught.
        redactors = {stream: self.log.redactor.stream() for stream in STREAMS}
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None

        def flush_partials() -> None:
            for stream, splitter in splitters.items():
                held = redactors[stream].flush()
                lines = splitter.feed(held) + splitter.flush()
                if lines:
                    self.log.append(STREAMS[stream], lines)

        try:
            async for stream, data in handle.output():
                stream = stream if stream in splitters else 1
                splitter = splitters[stream]
                lines = splitter.feed(redactors[stream].feed(data))
                if lines:
                    self.log.append(STREAMS[stream], lines)
                if timer is not None:
                    timer.cancel()
                    timer = None
                if splitter.pending or redactors[stream].holding:
                    timer = loop.call_later(PARTIAL_FLUSH_S, flush_partials)
        finally:
            if timer is not None:
                timer.cancel()
            flush_partials()
        return await handle.wait()

    async def _exited(self, status: ExitStatus) -> None:
        how = describe_exit(status)
        self.status.pid = 0
        self.status.ready = False
        self.status.exit_code = status.exit_code
        self.status.signal = status.signal
        if self._stopping:
            self._finish(STOPPED, f"stopped ({how})")
            self._event("service_stopped", exit_code=status.exit_code, signal=status.signal)
            return
        failed = status.exit_code != 0
        self.log.note(f"exited with {how}")
        self._event("service_exited", exit_code=status.exit_code, signal=status.signal)
        if failed and self.spec.restart == "on-failure":
            await self._restart_later(how)
            return
        if failed:
            self.status.error = f"exited with {how}"
        self._not_ready(f"exited with {how} before it was ready")
        self._finish(FAILED if failed else EXITED)

    async def _restart_later(self, how: str) -> None:
        if time.monotonic() - self._spawned_at >= BACKOFF_RESET_S:
            self._backoff_s = BACKOFF_FIRST_S
        delay, self._backoff_s = self._backoff_s, min(self._backoff_s * 2, BACKOFF_MAX_S)
        self.status.state = BACKOFF
        self.status.error = f"exited with {how}; restarting in {delay:g}s"
        self._changed()
        self.log.note(f"restarting in {delay:g}s (on-failure)")
        self._event("service_restarting", delay_s=delay, restarts=self.status.restarts + 1)
        await asyncio.sleep(delay)
        agent = self._current_agent()
        if self._stopping or agent is None:
            self._finish(STOPPED, "stopped while waiting to restart")
            return
        self.status.restarts += 1
        try:
            await self.spawn(agent)
        except AgentError as exc:
            reason = f"restart failed: {exc.message}"
            self.status.error = reason
            self._finish(FAILED, reason)
            self._not_ready(reason)

    def _finish(self, state: str, note: str = "") -> None:
        self.status.state = state
        self.status.pid = 0
        self.status.ready = False
        if note:
            self.log.note(note)
        self._changed()
        self._not_ready(note or f"ended ({state})")

    # -- stopping ------------------------------------------------------------------------------

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """TERM the process group, KILL it after grace_s; wait until it is gone."""
        self._stopping = True
        handle = self._handle
        if handle is not None and not handle.exited:
            for sig, wait in (("TERM", grace_s), ("KILL", KILL_WAIT_S)):
                with contextlib.suppress(AgentError):
                    await handle.signal(sig)
                try:
                    await asyncio.wait_for(handle.wait(), wait)
                    break
                except TimeoutError:
                    continue
                except AgentError:
                    break
        task = self._supervisor
        if task is not None and not task.done():
            if self.status.state == BACKOFF:
                task.cancel()  # nothing runs: do not wait for the restart timer
            else:
                await asyncio.wait({task}, timeout=2.0)
        if self.status.state not in ENDED:
            self._finish(STOPPED, "stopped")
            self._event("service_stopped", exit_code=None, signal=None)
        self._cancel_tasks()

    def lost(self, reason: str) -> None:
        """Its guest session is gone without an exit status (guest restarted, sandbox ended)."""
        self._cancel_tasks()
        self._handle = None
        if self.status.state not in ENDED:
            self.status.error = reason
            self._finish(STOPPED, reason)

    def detach(self) -> None:
        """Engine shutdown: stop reading; the guest process lives on."""
        self._cancel_tasks()
        self._handle = None

    def _cancel_tasks(self) -> None:
        for task in (self._supervisor, self._prober):
            if task is not None and not task.done() and task is not asyncio.current_task():
                task.cancel()
        self._supervisor = None
        self._prober = None

    # -- reporting ---------------------------------------------------------------------------

    def not_ready_error(self, reason: str, tail: int = 20) -> GroveError:
        lines = [f"{line.stream}: {line.text}" for line in self.log.since_seq(self._start_seq)[0]]
        lines = lines[-tail:]
        text = f"service '{self.name}' did not become ready: {reason}"
        if lines:
            text += "\nlast log lines:\n" + "\n".join(f"  {line}" for line in lines)
        return GroveError(
            "service_not_ready",
            text,
            f"fix the command or its probe; see 'grove service logs {self.sandbox_id} {self.name}'",
        )

    def describe(self) -> dict[str, Any]:
        status = self.status
        probe = self.spec.probe
        return {
            "name": self.name,
            "sandbox_id": self.sandbox_id,
            "state": status.state,
            "pid": status.pid or None,
            "ready": status.ready,
            "published_ports": [p.to_dict() for p in status.published],
            "restarts": status.restarts,
            "restart": self.spec.restart,
            "exit_code": status.exit_code,
            "signal": status.signal,
            "error": status.error,
            "started_at": status.started_at or None,
            "ready_at": status.ready_at,
            "ready_ms": status.ready_ms,
            "argv": list(self.spec.argv),
            "cwd": self.spec.cwd,
            "probe": f"{probe.kind}:{probe.target}" if probe else None,
        }


def _consume(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
