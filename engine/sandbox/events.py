"""Sandbox lifecycle events: persisted in the store, pushed to live followers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from engine.store.db import Store
from engine.store.records import EventRecord


@dataclass(frozen=True)
class Change:
    """One lifecycle event, as the in-process bus hands it to subscribers."""

    sandbox_id: str
    kind: str


class EventLog:
    """Events are written to the store and published on an in-process bus: engine parts that
    react to lifecycle changes subscribe instead of re-reading tables."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._changed = asyncio.Condition()
        self._subscribers: set[asyncio.Queue[Change]] = set()

    async def emit(self, sandbox_id: str, kind: str, **detail: Any) -> None:
        self._store.add_event(sandbox_id, kind, detail)
        for queue in self._subscribers:
            queue.put_nowait(Change(sandbox_id, kind))
        async with self._changed:
            self._changed.notify_all()

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[Change]]:
        queue: asyncio.Queue[Change] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

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
