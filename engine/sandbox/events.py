"""Sandbox lifecycle events: persisted in the store, pushed to live followers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from engine.store.db import Store
from engine.store.records import EventRecord


class EventLog:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._changed = asyncio.Condition()

    async def emit(self, sandbox_id: str, kind: str, **detail: Any) -> None:
        self._store.add_event(sandbox_id, kind, detail)
        async with self._changed:
            self._changed.notify_all()

    async def follow(
        self, sandbox_id: str, after: int = 0, follow: bool = False
    ) -> AsyncIterator[EventRecord]:
        while True:
            batch = self._store.events(sandbox_id, after)
            for event in batch:
                after = event.seq
                yield event
            if not follow:
                return
            if not batch:
                async with self._changed:
                    await self._changed.wait()
