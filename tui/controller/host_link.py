"""One host's connection: connect, follow its inventory watch and its metering, and start
over with backoff when either breaks. Every fact goes to the controller as a message naming
the host, so a host that drops or hangs never holds up the others.

Hangs are noticed, not waited out: while metering flows, a sample overdue by `stall_s` means
the engine (or the path to it) stopped answering, and the link drops and reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from textual.message import Message

from engine.errors import GroveError
from tui.engine.gateway import NOT_SUPPORTED, EngineGateway
from tui.messages import (
    HostConnected,
    HostConnecting,
    HostLost,
    InventoryChanged,
    MeteringUnavailable,
    MeterSampled,
)
from tui.models import EngineInfo

FIRST_RETRY_S = 0.5
MAX_RETRY_S = 8.0
#: Reconnecting for longer than this is shown as unreachable (still retried).
UNREACHABLE_AFTER_S = 15.0
#: A connection attempt (SSH handshake, engine discovery, first call) that takes longer fails.
CONNECT_TIMEOUT_S = 20.0
#: Events the first watch replays into the log.
REPLAY = 500


class Stalled(Exception):
    pass


class HostLink:
    def __init__(
        self,
        name: str,
        gateway: EngineGateway,
        post: Callable[[Message], object],
        *,
        meter_interval: float = 1.0,
        stall_s: float | None = None,
    ) -> None:
        self.name = name
        self.gateway = gateway
        self._post = post
        self.meter_interval = meter_interval
        self.stall_s = stall_s if stall_s is not None else max(3.0, 3 * meter_interval)
        self.cursor = 0
        self._wake = asyncio.Event()
        self._last_sample: float | None = None

    def retry_now(self) -> None:
        """Skip the wait before the next attempt (the user asked to reconnect)."""
        self._wake.set()

    async def run(self) -> None:
        """Runs until cancelled (the dashboard closes)."""
        delay = FIRST_RETRY_S
        ever_connected = False
        lost_since: float | None = None
        while True:
            self._post(HostConnecting(self.name))
            try:
                # Only the first connection may start an engine: one that went away later
                # was stopped or died, and the dashboard must not bring it back on its own.
                info = await self._reach(start=not ever_connected)
            except GroveError as exc:
                lost_since = lost_since or time.monotonic()
                recent = time.monotonic() - lost_since <= UNREACHABLE_AFTER_S
                self._post(HostLost(self.name, exc, reconnecting=ever_connected and recent))
                await self._sleep(delay)
                delay = min(delay * 2, MAX_RETRY_S)
                continue
            ever_connected, lost_since, delay = True, None, FIRST_RETRY_S
            self._post(HostConnected(self.name, info, self.gateway.description))
            try:
                await self._follow()
            except GroveError as exc:
                self._post(HostLost(self.name, exc, reconnecting=True))
            except Stalled:
                stalled = GroveError(
                    "engine_unreachable",
                    f"no answer from {self.name} for {self.stall_s:.0f} s",
                    "check the host and the network; the dashboard keeps retrying",
                )
                self._post(HostLost(self.name, stalled, reconnecting=True))
            except Exception as exc:  # a bug: shown on the host's row, and the link goes on
                bug = GroveError(
                    "internal",
                    f"{type(exc).__name__}: {exc}",
                    "please report this with the steps that led to it",
                )
                self._post(HostLost(self.name, bug, reconnecting=True))
            lost_since = time.monotonic()
            await self._sleep(FIRST_RETRY_S)

    async def _reach(self, start: bool) -> EngineInfo:
        """Connect and ask for the engine's status, within CONNECT_TIMEOUT_S: a host that drops
        packets would otherwise keep this link waiting for ever."""
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self.gateway.connect(start=start)
                return await self.gateway.status()
        except TimeoutError:
            raise GroveError(
                "host_unreachable",
                f"no answer from {self.name} within {CONNECT_TIMEOUT_S:.0f} s",
                "check that the host is up and reachable; the dashboard keeps retrying",
            ) from None

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _follow(self) -> None:
        """The watch and the metering stream together: whichever breaks first ends both."""
        self._last_sample = None
        tasks = [
            asyncio.create_task(self._watch()),
            asyncio.create_task(self._metering()),
            asyncio.create_task(self._watchdog()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if (error := task.exception()) is not None:
                raise error

    async def _watch(self) -> None:
        # A reconnect resumes after the newest event seen: no event twice, none lost.
        replay = REPLAY if self.cursor == 0 else 0
        async for change in self.gateway.watch(after=self.cursor, replay=replay):
            self.cursor = max(self.cursor, change.cursor)
            self._post(InventoryChanged(self.name, change))
        raise GroveError(
            "engine_unreachable",
            f"the engine on {self.name} ended its inventory stream",
            "it is probably shutting down; the dashboard reconnects when it is back",
        )

    async def _metering(self) -> None:
        try:
            async for sample in self.gateway.metering_stream(self.meter_interval):
                self._last_sample = time.monotonic()
                self._post(MeterSampled(self.name, sample))
        except GroveError as exc:
            if exc.code != NOT_SUPPORTED:
                raise
            self._post(MeteringUnavailable(self.name, exc))
            await asyncio.Event().wait()  # no metering: the watch alone keeps the link

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.stall_s / 3))
            last = self._last_sample
            if last is not None and time.monotonic() - last > self.stall_s:
                raise Stalled
