"""WatchInventory: every sandbox's lifecycle on one stream, resumable by cursor.

Without VMs: an engine on an empty home checks the request validation, the first (full)
update, an environment change that arrives as a bus notice, not an event, the engine limits in
Status, and `grove logs --all` argument errors. With VMs (the session engine): one sandbox is
created, stopped, started, forked and terminated under a watch, then events made while no watch
is open come back exactly once to a watch resumed from the cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from conftest import ENV, REPO, Grove, _link_image_cache, teardown_grove

from engine import config
from engine.client import AsyncGrove, GroveError
from engine.client import models as m
from engine.config import Paths
from engine.files import limits as file_limits
from engine.fork.transaction import MAX_REPLICAS
from engine.sandbox.events import ENVIRONMENTS, Change, EventLog
from engine.store.db import Store

TIMEOUT = 180.0


class Watch:
    """A watch read in the background, and the inventory its updates add up to."""

    def __init__(self, client: AsyncGrove, after: int = 0, replay: int = 0) -> None:
        self.updates: list[m.InventoryUpdate] = []
        self.sandboxes: dict[str, m.Sandbox] = {}
        self.removed: set[str] = set()
        self.events: list[m.Event] = []
        self.lineage: tuple[m.LineageNode, ...] = ()
        self.environments: tuple[m.Environment, ...] = ()
        self._arrived = asyncio.Event()
        self._stream: AsyncIterator[m.InventoryUpdate] = client.watch_inventory(after, replay)
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            async for update in self._stream:
                self._apply(update)
                self._arrived.set()
        finally:
            self._arrived.set()  # a failed watch wakes whoever waits, to see why

    def _apply(self, update: m.InventoryUpdate) -> None:
        self.updates.append(update)
        if update.full:
            self.sandboxes = {}
        for sandbox in update.sandboxes:
            self.sandboxes[sandbox.id] = sandbox
        for sandbox_id in update.removed:
            self.sandboxes.pop(sandbox_id, None)
            self.removed.add(sandbox_id)
        self.events.extend(update.events)
        if update.lineage is not None:
            self.lineage = update.lineage
        if update.environments is not None:
            self.environments = update.environments

    def kinds(self, sandbox_id: str) -> list[str]:
        return [e.kind for e in self.events if e.sandbox_id == sandbox_id]

    def phase(self, sandbox_id: str) -> str | None:
        found = self.sandboxes.get(sandbox_id)
        return found.phase if found is not None else None

    def under(self, parent: str) -> set[str]:
        """The ids of the lineage nodes right under parent."""
        for root in self.lineage:
            for node in root.walk():
                if node.id == parent:
                    return {c.id for c in node.children}
        return set()

    async def until(self, ready: Callable[[], object], what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not ready():
            if self._task.done():
                self._task.result()  # its error, if it failed
                raise AssertionError(f"the watch ended while waiting for {what}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}; got {self.updates[-3:]}")
            # No await between ready() and clear(): an update cannot slip in unseen.
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    async def first(self) -> m.InventoryUpdate:
        await self.until(lambda: self.updates, "the first update")
        return self.updates[0]

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()


def contiguous(events: tuple[m.Event, ...] | list[m.Event], after: int) -> bool:
    """Every event after `after`, each once, oldest first: seqs are a global autoincrement."""
    return [e.seq for e in events] == list(range(after + 1, after + 1 + len(events)))


# --- without VMs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def idle() -> Iterator[Grove]:
    """An engine on an empty home (no images): nothing here can boot a VM."""
    home = Path(tempfile.mkdtemp(prefix="gw", dir="/tmp"))  # short: sockets fit in sun_path
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROVE_")}
    env.update(GROVE_HOME=str(home), GROVE_MEM_DIR=str(home / "memory"), PYTHONPATH=str(REPO),
               XDG_CONFIG_HOME=str(home / "config"))  # fmt: skip
    engine = Grove(home, env)
    try:
        engine.ok("engine", "start", timeout=60)
        yield engine
    finally:
        teardown_grove(engine)


async def connect(grove: Grove) -> AsyncGrove:
    return await AsyncGrove.connect(Paths(grove.home), autostart=False)


@pytest.mark.parametrize(
    ("after", "replay", "said"),
    [(-1, 0, "invalid watch position -1"), (0, -1, "invalid replay count -1"),
     (0, config.MAX_WATCH_REPLAY + 1, f"at most {config.MAX_WATCH_REPLAY}")],
)  # fmt: skip
async def test_bad_cursor_or_replay_is_invalid_argument(
    idle: Grove, after: int, replay: int, said: str
) -> None:
    async with await connect(idle) as client:
        with pytest.raises(GroveError) as info:
            async for _ in client.watch_inventory(after, replay):
                pass
    assert info.value.code == "invalid_argument"
    assert said in info.value.message and info.value.remedy


async def test_first_update_is_full_and_an_environment_change_follows(idle: Grove) -> None:
    async with await connect(idle) as client, Watch(client, replay=5) as watch:
        first = await watch.first()
        assert first.full and first.cursor == 0
        assert first.sandboxes == () and first.events == () and first.removed == ()
        assert first.lineage == ()  # no environment is in the cache yet
        assert first.environments is not None
        assert {e.name: e.cached for e in first.environments}[ENV] is False
        # The image appears on disk; a prune (which announces itself on the bus, being
        # no sandbox's event) makes the watch look again and send what changed.
        _link_image_cache(idle.home)
        await client.prune()
        await watch.until(lambda: len(watch.updates) > 1, "an update after the prune")
        changed = watch.updates[1]
        assert not changed.full and changed.events == () and changed.cursor == 0
        assert changed.environments is not None
        assert {e.name: e.cached for e in changed.environments}[ENV] is True
        assert changed.lineage is not None and [n.name for n in changed.lineage] == [ENV]
        # Nothing changed since: a second prune sends nothing.
        await client.prune()
        await asyncio.sleep(1.0)
        assert len(watch.updates) == 2


async def test_status_carries_the_engine_limits(idle: Grove) -> None:
    async with await connect(idle) as client:
        info = await client.status()
    assert info.limits == m.Limits(
        max_fork_replicas=MAX_REPLICAS, max_vcpus=config.MAX_VCPUS,
        min_mem_mib=config.MIN_MEM_MIB, max_mem_mib=config.MAX_MEM_MIB,
        default_vcpus=config.DEFAULT_VCPUS, default_mem_mib=config.DEFAULT_MEM_MIB,
        max_push_bytes=file_limits.push_limit(), max_read_bytes=file_limits.MAX_READ_BYTES,
    )  # fmt: skip


def test_logs_takes_one_sandbox_or_all(idle: Grove) -> None:
    for args in (("logs",), ("logs", "sb-1", "--all")):
        result = idle.run(*args, "--json")
        assert result.code == 1
        error = result.json()
        assert isinstance(error, dict)
        assert error["error"]["code"] == "invalid_argument" and error["error"]["remedy"]
    plain = idle.run("logs", "sb-1", "--all")
    assert plain.code == 1 and plain.err.startswith("error: pass exactly one of ID or --all")
    assert idle.ok("logs", "--all").out == ""  # no sandbox ever: no event


async def test_a_bounded_subscriber_drops_instead_of_growing(tmp_path: Path) -> None:
    store = Store(tmp_path / "grove.db")
    try:
        events = EventLog(store)
        with events.subscribe(2) as changes:
            for n in range(5):
                await events.emit(f"sb-{n}", "console", line="x")
            events.notify(ENVIRONMENTS)
            assert changes.qsize() == 2
            assert [changes.get_nowait(), changes.get_nowait()] == [
                Change("sb-0", "console"), Change("sb-1", "console")
            ]  # fmt: skip
        assert store.last_event_seq() == 5  # stored all the same; the notice is not stored
        assert [e.seq for e in store.events_since(2, limit=2)] == [3, 4]
        assert [e.sandbox_id for e in store.newest_events(2)] == ["sb-3", "sb-4"]
    finally:
        store.close()


def test_flags_say_whether_environments_and_lineage_came() -> None:
    from engine.api import grove_pb2 as pb
    from engine.api import wire

    bare = wire.inventory_update(pb.InventoryUpdate(cursor=7, removed=["sb-1"]))
    assert bare == m.InventoryUpdate(cursor=7, full=False, removed=("sb-1",))
    assert bare.environments is None and bare.lineage is None
    empty = wire.inventory_update(pb.InventoryUpdate(has_environments=True, has_lineage=True))
    assert empty.environments == () and empty.lineage == ()


# --- with VMs ---------------------------------------------------------------------------------


async def test_watch_follows_a_sandbox_and_resumes_without_loss(grove: Grove) -> None:
    async with await connect(grove) as client:
        listed = {s.id for s in await client.sandboxes()}
        watch = Watch(client)
        made: list[str] = []
        try:
            first = await watch.first()
            assert first.full and first.events == ()
            assert {s.id for s in first.sandboxes} == listed
            assert first.environments is not None and first.lineage is not None
            assert ENV in {e.name for e in first.environments if e.cached}

            sid = (await client.create(ENV)).id
            made.append(sid)
            await watch.until(
                lambda: "created" in watch.kinds(sid) and watch.phase(sid) == "running",
                "the new sandbox, created and running",
            )
            assert sid in {n.id for root in watch.lineage for n in root.walk()}

            await client.stop(sid)
            await watch.until(lambda: watch.phase(sid) == "stopped", "the sandbox stopped")
            await client.start(sid)
            await watch.until(
                lambda: "started" in watch.kinds(sid) and watch.phase(sid) == "running",
                "the sandbox started again",
            )

            before = len(watch.updates)
            forked = await client.fork(sid)
            child = forked.children[0].id
            made.append(child)
            await watch.until(
                lambda: watch.phase(child) == "running" and child in watch.under(sid),
                "the fork child, listed and under its parent in the lineage",
            )
            assert watch.sandboxes[child].parent_id == sid
            assert any(u.lineage is not None for u in watch.updates[before:])
            assert "forked" in watch.kinds(sid) and "created" in watch.kinds(child)

            await client.terminate(child)
            await watch.until(
                lambda: child in watch.removed and child not in watch.under(sid),
                "the terminated child, removed from the inventory and the lineage",
            )
            assert child not in watch.sandboxes and "terminated" in watch.kinds(child)
            # One stream carried every event since it opened, each once, in order.
            assert contiguous(watch.events, first.cursor)
            cursor = watch.updates[-1].cursor
            assert cursor == watch.events[-1].seq
        finally:
            await watch.close()

        try:
            # While no watch is open.
            await client.exec(sid, ["true"])
            await client.terminate(sid)
            async with Watch(client, after=cursor) as resuming:
                resumed = await resuming.first()
            assert resumed.full and resumed.events, "the missed events"
            assert contiguous(resumed.events, cursor)
            assert resumed.cursor == resumed.events[-1].seq
            kinds = [e.kind for e in resumed.events if e.sandbox_id == sid and e.kind != "console"]
            assert kinds[-3:] == ["exec_started", "exec_ended", "terminated"]
            assert sid not in {s.id for s in resumed.sandboxes}
            async with Watch(client, after=resumed.cursor) as again:
                repeated = (await again.first()).events
            assert all(e.seq > resumed.cursor for e in repeated), "nothing repeated"
            async with Watch(client, replay=3) as fresh:
                newest = await fresh.first()
            assert [e.seq for e in newest.events] == list(
                range(newest.cursor - 2, newest.cursor + 1)
            )
        finally:
            for leftover in made:
                with contextlib.suppress(GroveError):
                    await client.terminate(leftover)
