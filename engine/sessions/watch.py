"""Notices when a sandbox's agent connection changes and has the session owners re-bind.

A guest session (a shell, a service) outlives the engine's connection to the agent: the engine
restarts and reconnects, a sandbox is restored from a snapshot under a new QEMU, a fork child
wakes up with its parent's processes. Each time, the agent lists the sessions it kept in its
hello, and whoever owns them here must attach again with new host-side objects. Every one of
these is a lifecycle event (created, started, reset, adopted, stopped, failed, terminated), so
the watch follows the engine's event bus and checks the sandbox an event names: a running
sandbox whose ``vm.agent`` is not the client we last saw has a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from engine.agent.client import AgentClient
from engine.errors import GroveError
from engine.sandbox.events import EventLog
from engine.sandbox.manager import Sandboxes
from engine.sandbox.phase import LIVE, Phase
from engine.store.db import Store
from engine.store.records import SandboxRecord
from engine.vmm.vm import Vm

log = logging.getLogger(__name__)

#: How often the tickers (console tail, shell checkpoints) run for the running sandboxes.
#: Connection changes do not wait for it: they arrive as events.
INTERVAL_S = 0.5

Ticker = Callable[[SandboxRecord], Awaitable[None]]


class SessionOwner(Protocol):
    def active_sandboxes(self) -> set[str]:
        """Sandboxes where this owner has sessions it believes alive."""
        ...

    async def agent_changed(self, record: SandboxRecord, vm: Vm, agent: AgentClient) -> None:
        """A new agent connection serves the sandbox: attach what it still runs."""
        ...

    async def sandbox_gone(self, sandbox_id: str, record: SandboxRecord | None) -> None:
        """The sandbox no longer runs (stopped, failed, terminated): its sessions are over."""
        ...


class SandboxWatch:
    def __init__(
        self, sandboxes: Sandboxes, store: Store, events: EventLog, interval: float = INTERVAL_S
    ) -> None:
        self._sandboxes = sandboxes
        self._store = store
        self._events = events
        self._interval = interval
        self._owners: list[SessionOwner] = []
        self._tickers: list[Ticker] = []
        self._seen: dict[str, AgentClient] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._task: asyncio.Task[None] | None = None

    def add_owner(self, owner: SessionOwner) -> None:
        self._owners.append(owner)

    def add_ticker(self, ticker: Ticker) -> None:
        """Called for every running sandbox on each pass (console tailing)."""
        self._tickers.append(ticker)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="sandbox-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def ensure(self, sandbox_id: str) -> None:
        """Bring the owners up to date with this sandbox's connection before using it."""
        record = self._record(sandbox_id)
        await self._check(sandbox_id, record)

    def _record(self, sandbox_id: str) -> SandboxRecord | None:
        try:
            return self._sandboxes.get(sandbox_id)
        except GroveError:
            return None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        with self._events.subscribe() as changes:
            next_tick = loop.time()
            while True:
                try:
                    change = await asyncio.wait_for(
                        changes.get(), max(0.0, next_tick - loop.time())
                    )
                    if change.sandbox_id:  # not a notice about environments or snapshots
                        await self.ensure(change.sandbox_id)
                except TimeoutError:
                    next_tick = loop.time() + self._interval
                    await self._tick()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("sandbox watch failed")

    async def pass_once(self) -> None:
        """Check every sandbox once (at start-up, after recovery), then tick."""
        running = {r.id: r for r in self._sandboxes.records() if r.phase is Phase.RUNNING}
        active: set[str] = set(self._seen)
        for owner in self._owners:
            active |= owner.active_sandboxes()
        for sandbox_id in active - set(running):
            await self._check(sandbox_id, self._record(sandbox_id))
        for record in running.values():
            await self._check(record.id, record)
        await self._tick()

    async def _tick(self) -> None:
        for sandbox_id in self._sandboxes.running_ids():
            record = self._record(sandbox_id)
            if record is None or record.phase is not Phase.RUNNING:
                continue
            for ticker in self._tickers:
                try:
                    await ticker(record)
                except Exception:
                    log.exception("ticker failed for %s", record.id)

    async def _check(self, sandbox_id: str, record: SandboxRecord | None) -> None:
        lock = self._locks.setdefault(sandbox_id, asyncio.Lock())
        async with lock:
            vm = self._sandboxes.vm(sandbox_id)
            agent = vm.agent if vm is not None else None
            if record is not None and record.phase is Phase.RUNNING and vm and agent:
                if agent.closed or self._seen.get(sandbox_id) is agent:
                    return
                self._seen[sandbox_id] = agent
                for owner in self._owners:
                    try:
                        await owner.agent_changed(record, vm, agent)
                    except Exception:
                        log.exception("re-attaching sessions of %s failed", sandbox_id)
                return
            if record is not None and record.phase in LIVE:
                return  # paused or between connections: wait and see
            self._seen.pop(sandbox_id, None)
            for owner in self._owners:
                if sandbox_id in owner.active_sandboxes():
                    try:
                        await owner.sandbox_gone(sandbox_id, record)
                    except Exception:
                        log.exception("ending sessions of %s failed", sandbox_id)
            if record is None or record.phase is Phase.TERMINATED:
                self._locks.pop(sandbox_id, None)

    def source_of(self, record: SandboxRecord) -> str | None:
        """The sandbox whose memory this one was restored from (fork parent or snapshot source),
        whose sessions it therefore runs too."""
        if record.parent_id and self._record(record.parent_id) is not None:
            return record.parent_id
        if record.template_id:
            template = self._store.get_template(record.template_id)
            if template is not None and template.source_sandbox:
                return template.source_sandbox
        return None
