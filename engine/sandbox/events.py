"""Sandbox lifecycle events: persisted in the store, pushed to live followers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from engine.secrets.redact import Redactor
from engine.store.db import Store
from engine.store.records import EventRecord


@dataclass(frozen=True)
class Change:
    """One lifecycle event, as the in-process bus hands it to subscribers.

    An empty sandbox_id is a notice that engine state outside any sandbox changed (kind
    ENVIRONMENTS or SNAPSHOTS): nothing is stored for it, there is no seq to read.
    """

    sandbox_id: str
    kind: str


#: Notices (Change with no sandbox): environments were pulled, pruned or their templates
#: changed; a named snapshot went away without a sandbox event to say so.
ENVIRONMENTS = "environments"
SNAPSHOTS = "snapshots"


class EventLog:
    """Events are written to the store and published on an in-process bus: engine parts that
    react to lifecycle changes subscribe instead of re-reading tables."""

    def __init__(self, store: Store, redactor: Redactor | None = None) -> None:
        self._store = store
        self._redactor = redactor or Redactor()
        self._changed = asyncio.Condition()
        self._subscribers: set[asyncio.Queue[Change]] = set()

    async def emit(self, sandbox_id: str, kind: str, **detail: Any) -> None:
        # Redacted before it is stored: the database must never hold a secret's value.
        self._store.add_event(sandbox_id, kind, self._redactor.value(detail))
        self._publish(Change(sandbox_id, kind))
        async with self._changed:
            self._changed.notify_all()

    def notify(self, kind: str) -> None:
        """Tell subscribers that state outside any sandbox changed (see Change)."""
        self._publish(Change("", kind))

    def _publish(self, change: Change) -> None:
        for queue in self._subscribers:
            # A bounded queue is a subscriber that only needs to know something changed and
            # re-reads the store: when it lags, what it already holds wakes it just as well.
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(change)

    @contextlib.contextmanager
    def subscribe(self, maxsize: int = 0) -> Iterator[asyncio.Queue[Change]]:
        """Every Change from now on; maxsize > 0 drops those past it (see _publish)."""
        queue: asyncio.Queue[Change] = asyncio.Queue(maxsize)
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
