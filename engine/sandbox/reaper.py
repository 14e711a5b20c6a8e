"""The TTL reaper: terminates each sandbox when its time is up, with one timer, not a poll.

A TTL is a row field (sandboxes.expires_at, unix time), so it survives a restart. The reaper
keeps one asyncio timer armed for the earliest expiry among the sandboxes that are not
terminated, and arms it again whenever that can change: a TTL set or cleared, a sandbox
created, forked or terminated, a reap done. When it fires, each sandbox due gets an `expired`
event and is then terminated through the same path as `grove sandbox terminate`. At engine
start (after recovery) `start` reaps what expired while no engine ran, then arms the timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from engine.errors import GroveError
from engine.sandbox.events import EventLog
from engine.sandbox.phase import Phase
from engine.store.db import Store

log = logging.getLogger(__name__)

Terminate = Callable[[str], Awaitable[object]]

#: The timer is armed at most this far ahead and then armed again: the loop's clock is
#: monotonic (it stops while the host sleeps) and expiry is wall-clock time, so a step of the
#: wall clock or a suspended host is caught within this.
MAX_SLEEP_S = 300.0
#: A sandbox whose terminate failed is tried again after this, not in a tight loop.
RETRY_S = 5.0
#: A timer may fire a clock tick early: what is due this close counts as due.
SLACK_S = 0.005


class Reaper:
    def __init__(
        self,
        store: Store,
        terminate: Terminate,
        events: EventLog,
        default_ttl: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._terminate = terminate
        self._events = events
        #: Seconds a sandbox created or forked without a TTL gets (GROVE_DEFAULT_TTL).
        self.default_ttl = default_ttl
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None
        #: The (expires_at, sandbox id) the timer is armed for; None: no timer.
        self.armed_for: tuple[float, str] | None = None
        self._reaping: set[str] = set()
        self._retry_at: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # TTLs

    def expiry(self, ttl_s: float | None) -> float | None:
        """When a sandbox given ttl_s (None: the default; 0: none) expires."""
        seconds = self.default_ttl if ttl_s is None else ttl_s
        return self._clock() + seconds if seconds else None

    async def set_ttl(self, sandbox_id: str, ttl_s: float | None) -> float | None:
        """Expire the sandbox ttl_s seconds from now (None or 0: never); its new expires_at."""
        expires_at = self._clock() + ttl_s if ttl_s else None
        await self._record(sandbox_id, expires_at)
        return expires_at

    async def apply(self, sandbox_id: str, ttl_s: float | None) -> float | None:
        """A new sandbox's TTL (None: the engine's default); its expires_at."""
        expires_at = self.expiry(ttl_s)
        if expires_at is not None:
            await self._record(sandbox_id, expires_at)
        return expires_at

    async def _record(self, sandbox_id: str, expires_at: float | None) -> None:
        self._store.update_sandbox(sandbox_id, expires_at=expires_at)
        self._retry_at.pop(sandbox_id, None)
        self.arm()
        # An event, so followers and inventory watches (the dashboard) see the new time.
        await self._events.emit(sandbox_id, "ttl", expires_at=expires_at)

    # the timer

    async def start(self) -> None:
        """At engine start, after recovery: reap what expired meanwhile, then arm."""
        self._closed = False
        await self._reap_due()

    def arm(self) -> None:
        """(Re)arm the one timer for the earliest expiry; none when no sandbox has a TTL."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.armed_for = None
        if self._closed:
            return
        due = self._next()
        if due is None:
            return
        loop = asyncio.get_running_loop()
        delay = min(max(0.0, due[0] - self._clock()), MAX_SLEEP_S)
        self._timer = loop.call_at(loop.time() + delay, self._fire)
        self.armed_for = due

    def _pending(self) -> list[tuple[float, str, float]]:
        """(when it is due: its expiry, or a failed reap's retry; id; expires_at) of each
        sandbox with a TTL that is neither terminated nor being reaped now."""
        return [
            (max(r.expires_at, self._retry_at.get(r.id, 0.0)), r.id, r.expires_at)
            for r in self._store.list_sandboxes()
            if r.expires_at is not None
            and r.phase is not Phase.TERMINATED
            and r.id not in self._reaping
        ]

    def _next(self) -> tuple[float, str] | None:
        return min(((due, sid) for due, sid, _ in self._pending()), default=None)

    def _fire(self) -> None:
        self._timer = None
        self.armed_for = None
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._reap_due(), name="ttl-reaper")
        # else: the running pass arms again when it ends

    async def _reap_due(self) -> None:
        try:
            while True:
                now = self._clock()
                due = [(sid, exp) for when, sid, exp in self._pending() if when <= now + SLACK_S]
                if not due or self._closed:
                    return
                # Claimed now, before any await: a second pass cannot pick them up too.
                self._reaping.update(sid for sid, _ in due)
                await asyncio.gather(*(self._reap(sid, expires_at) for sid, expires_at in due))
        finally:
            self.arm()

    async def _reap(self, sandbox_id: str, expires_at: float) -> None:
        try:
            first = sandbox_id not in self._retry_at
            if first:
                late_ms = round((self._clock() - expires_at) * 1000, 1)
                await self._events.emit(sandbox_id, "expired", expires_at=expires_at,
                                        late_ms=late_ms)  # fmt: skip
            await self._terminate(sandbox_id)
            self._retry_at.pop(sandbox_id, None)
        except GroveError as exc:
            if exc.code in ("already_terminated", "sandbox_not_found"):
                self._retry_at.pop(sandbox_id, None)  # someone else got there first
            else:
                log.warning("reaping expired sandbox %s failed: %s", sandbox_id, exc.message)
                self._retry_at[sandbox_id] = self._clock() + RETRY_S
        except Exception:
            log.exception("reaping expired sandbox %s failed", sandbox_id)
            self._retry_at[sandbox_id] = self._clock() + RETRY_S
        finally:
            self._reaping.discard(sandbox_id)

    async def close(self) -> None:
        """Engine stop: the timer is cancelled; a reap under way ends first (a terminate cut
        short would leave work for recovery), and no new one starts."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.armed_for = None
        if self._task is not None and not self._task.done():
            with contextlib.suppress(Exception):
                await self._task
        self._task = None
