"""WatchInventory: every sandbox's lifecycle on one stream (a dashboard's one watch per host).

Events are the spine. Each is stored under a global seq before it is published on the bus, so
a watch subscribes first, then reads the newest seq, then the state: nothing falls between.
An event stored after that read may already show in the state, and still comes in the next
update; from then on every wake (coalesced) reads the store after the watch's cursor, so each
event is sent once and none is skipped. Environments and snapshots change without a sandbox
event: the engine publishes a notice for them (events.ENVIRONMENTS, events.SNAPSHOTS), and the
watch sends environments and lineage again only when they differ from what it sent last.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from typing import TYPE_CHECKING

from engine.api import convert
from engine.api import grove_pb2 as pb
from engine.config import MAX_WATCH_REPLAY as MAX_REPLAY
from engine.errors import invalid
from engine.sandbox.events import ENVIRONMENTS, Change
from engine.sandbox.phase import Phase
from engine.store.records import EventRecord

if TYPE_CHECKING:
    from engine.daemon import Engine

#: Events in one update at most: a longer backlog comes as several updates in a row.
MAX_EVENTS = 10_000
#: Changes that arrive this close together make one update (a boot logs many console lines).
COALESCE_S = 0.05
#: Bus changes held for one watch: it only needs to know that something changed, so a watch
#: whose client reads slowly drops the rest instead of growing (see EventLog.subscribe).
QUEUE_BOUND = 256


def check(after: int, replay: int) -> None:
    if after < 0:
        raise invalid(
            f"invalid watch position {after}",
            "pass 0 for a fresh watch, or the cursor of the last update seen",
        )
    if replay < 0:
        raise invalid(
            f"invalid replay count {replay}", f"pass 0 for no past events, or up to {MAX_REPLAY}"
        )
    if replay > MAX_REPLAY:
        raise invalid(
            f"replay of {replay} events asked; at most {MAX_REPLAY} are replayed",
            f"ask for {MAX_REPLAY} or fewer; read a sandbox's older ones with 'grove logs ID'",
        )


async def watch(engine: Engine, after: int, replay: int) -> AsyncIterator[pb.InventoryUpdate]:
    """The updates of one watch, until the client goes away (grpc cancels the handler)."""
    check(after, replay)
    with engine.events.subscribe(QUEUE_BOUND) as changes:
        inventory = _Inventory(engine)
        yield await inventory.full(after, replay)
        while True:
            notices = set() if inventory.behind else await _next_changes(changes)
            update = await inventory.since(notices)
            if update is not None:
                yield update


async def _next_changes(changes: asyncio.Queue[Change]) -> set[str]:
    """Wait for a change, let its neighbours arrive, and take them all: the notices among
    them (every kind, if the queue overflowed and some may be lost)."""
    first = await changes.get()
    await asyncio.sleep(COALESCE_S)
    overflowed = changes.full()
    batch = [first]
    while not changes.empty():
        batch.append(changes.get_nowait())
    notices = {c.kind for c in batch if not c.sandbox_id}
    return notices | {ENVIRONMENTS} if overflowed else notices


class _Inventory:
    """What one watch has sent: its cursor, and the environments and lineage last sent, to
    send them again only when they differ (a comparison of bytes: memory stays flat)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.cursor = 0
        #: A backlog longer than one update remains: send on without waiting for a change.
        self.behind = False
        self._environments = b""
        self._lineage = b""
        self._templates: tuple[Hashable, ...] = ()

    async def full(self, after: int, replay: int) -> pb.InventoryUpdate:
        store = self._engine.store
        newest = store.last_event_seq()
        events: list[EventRecord] = []
        if after:
            events = self._read(after)
        elif replay:
            events = store.newest_events(replay)
        # Caught up, the cursor is the newest seq even if no event came with it (a fresh
        # watch, or `after` from a store since reset): resuming from it never repeats.
        self.cursor = events[-1].seq if self.behind else newest
        records = self._engine.sandboxes.records(include_terminated=False)
        update = pb.InventoryUpdate(
            cursor=self.cursor,
            full=True,
            sandboxes=[convert.sandbox(r) for r in records],
            events=[convert.event(e) for e in events],
            has_environments=True,
            has_lineage=True,
        )
        self._templates_changed()  # the baseline the next updates compare with
        update.environments.extend(await self._environments_now())
        update.lineage.extend(self._lineage_now())
        self._environments = _bytes(pb.EnvironmentList(environments=update.environments))
        self._lineage = _bytes(pb.LineageReply(roots=update.lineage))
        return update

    async def since(self, notices: set[str]) -> pb.InventoryUpdate | None:
        """The next update: events after the cursor and what changed; None if nothing did."""
        events = self._read(self.cursor)
        update = pb.InventoryUpdate(cursor=self.cursor, full=False)
        if events:
            self.cursor = update.cursor = events[-1].seq
            update.events.extend(convert.event(e) for e in events)
            self._named(update, events)
        if events or notices:
            templates_changed = self._templates_changed()
            if templates_changed or ENVIRONMENTS in notices:
                found = await self._environments_now()
                encoded = _bytes(pb.EnvironmentList(environments=found))
                if encoded != self._environments:
                    self._environments = encoded
                    update.has_environments = True
                    update.environments.extend(found)
            roots = self._lineage_now()
            encoded = _bytes(pb.LineageReply(roots=roots))
            if encoded != self._lineage:
                self._lineage = encoded
                update.has_lineage = True
                update.lineage.extend(roots)
        if not (events or update.has_environments or update.has_lineage):
            return None
        return update

    def _read(self, after: int) -> list[EventRecord]:
        events = self._engine.store.events_since(after, MAX_EVENTS)
        self.behind = len(events) == MAX_EVENTS
        return events

    def _named(self, update: pb.InventoryUpdate, events: list[EventRecord]) -> None:
        """The sandboxes the events name, as they are now; terminated or gone: removed."""
        store = self._engine.store
        for sandbox_id in dict.fromkeys(e.sandbox_id for e in events):
            record = store.get_sandbox(sandbox_id)
            if record is None or record.phase is Phase.TERMINATED:
                update.removed.append(sandbox_id)
            else:
                update.sandboxes.append(convert.sandbox(record))

    def _templates_changed(self) -> bool:
        # Whether an environment's template is ready changes with its template rows (a create
        # boots one, a terminate may collect one), which sandbox events only hint at.
        rows = tuple(
            (t.id, t.phase, t.environment, t.image_hash)
            for t in self._engine.store.list_templates()
        )
        changed = rows != self._templates
        self._templates = rows
        return changed

    async def _environments_now(self) -> list[pb.Environment]:
        return [convert.environment(e) for e in await self._engine.environments.list()]

    def _lineage_now(self) -> list[pb.LineageNode]:
        return [convert.lineage(root) for root in self._engine.lineage()]


def _bytes(message: pb.EnvironmentList | pb.LineageReply) -> bytes:
    return message.SerializeToString(deterministic=True)
