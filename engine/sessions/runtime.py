"""Shells, services and the console tail, wired to one engine with a shared watch."""

from __future__ import annotations

from engine.config import Paths
from engine.sandbox.console import ConsoleTail
from engine.sandbox.events import EventLog
from engine.sandbox.manager import Sandboxes
from engine.secrets.keeper import SecretKeeper
from engine.services.manager import Services
from engine.sessions.table import SessionTable
from engine.sessions.watch import SandboxWatch
from engine.shells.manager import Shells
from engine.store.db import Store


class GuestSessions:
    def __init__(
        self,
        paths: Paths,
        store: Store,
        sandboxes: Sandboxes,
        events: EventLog,
        secrets: SecretKeeper,
    ) -> None:
        self.table = SessionTable(store)
        self.watch = SandboxWatch(sandboxes, store, events)
        self.shells = Shells(paths, sandboxes, self.table, events, self.watch, secrets)
        self.services = Services(paths, sandboxes, self.table, events, self.watch, secrets)
        self.console = ConsoleTail(paths, self.table, events)
        self.watch.add_ticker(self.console.tick)
        self.watch.add_ticker(self.shells.checkpoint)

    async def start(self) -> None:
        """After the sandboxes are recovered: load the tables and re-attach what runs."""
        self.shells.recover()
        self.services.recover()
        await self.watch.pass_once()
        self.watch.start()

    async def stop(self) -> None:
        """Before the sandboxes stop: guest processes are left alone, host objects end."""
        await self.watch.stop()
        await self.shells.shutdown()
        await self.services.shutdown()
