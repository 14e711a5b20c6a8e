"""TTLs without VMs: durations as typed, the engine's default, how a remaining time reads, and
the reaper's one timer (armed for the earliest expiry, none without TTLs, re-armed on every
change), over a real store and event log with a terminate that only records."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import GroveError
from engine.sandbox import reaper as reaper_module
from engine.sandbox import ttl
from engine.sandbox.events import EventLog
from engine.sandbox.phase import Phase
from engine.sandbox.reaper import Reaper
from engine.store.db import Store
from engine.store.records import SandboxRecord

# -- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("2h", 7200), ("1h30m", 5400), ("1.5h", 5400),
     ("2d", 172800), ("1d2h3m4s", 93784), (" 10M ", 600), ("0.5s", 0.5)],
)  # fmt: skip
def test_durations_parse(text: str, seconds: float) -> None:
    assert ttl.parse(text) == seconds


@pytest.mark.parametrize(
    "text", ["10x", "", " ", "m", "90", "30m1h", "1h 30m", "-5s", "1h1h", "0s", "0", "1e3s",
             "400d", "inf", "nan"],
)  # fmt: skip
def test_bad_durations_are_one_clear_error(text: str) -> None:
    with pytest.raises(GroveError) as caught:
        ttl.parse(text)
    error = caught.value
    assert error.code == "invalid_argument"
    assert error.message.startswith("invalid duration") and "\n" not in error.message
    assert error.remedy


def test_zero_is_no_limit_only_where_allowed() -> None:
    assert ttl.parse("0", allow_zero=True) == 0 and ttl.parse("0s", allow_zero=True) == 0
    assert ttl.check(0, allow_zero=True) == 0
    for bad in (-1.0, math.nan, ttl.MAX_TTL_S + 1):
        with pytest.raises(GroveError):
            ttl.check(bad, allow_zero=True)
    with pytest.raises(GroveError):
        ttl.check(0)


def test_engine_default_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ttl.ENV_DEFAULT, raising=False)
    assert ttl.default_from_env() is None
    for unset in ("", "0"):
        monkeypatch.setenv(ttl.ENV_DEFAULT, unset)
        assert ttl.default_from_env() is None
    monkeypatch.setenv(ttl.ENV_DEFAULT, "1h30m")
    assert ttl.default_from_env() == 5400
    monkeypatch.setenv(ttl.ENV_DEFAULT, "10x")
    with pytest.raises(GroveError) as caught:
        ttl.default_from_env()
    assert caught.value.code == "invalid_config"
    assert ttl.ENV_DEFAULT in caught.value.message and ttl.ENV_DEFAULT in caught.value.remedy


def test_remaining_time_reads() -> None:
    now = 1000.0
    assert ttl.remaining(None, now) == ttl.NEVER == "never"
    assert ttl.remaining(now + 252, now) == "4m12s"
    assert ttl.remaining(now + 41.5, now) == "42s"  # rounded up: 0s only once due
    assert ttl.remaining(now + 5400, now) == "1h30m"
    assert ttl.remaining(now + 2 * 86400 + 3 * 3600, now) == "2d03h"
    assert ttl.remaining(now - 3, now) == "0s"  # due, the reaper not there yet


# -- the reaper -----------------------------------------------------------------------------


class Harness:
    """A store with sandboxes, and a terminate that records what it was asked."""

    def __init__(self, path: Path) -> None:
        self.store = Store(path / "grove.db")
        self.events = EventLog(self.store)
        self.terminated: list[tuple[str, float]] = []
        self.fail: set[str] = set()
        self.reaper = Reaper(self.store, self.terminate, self.events)

    def add(self, sandbox_id: str, expires_at: float | None, phase: Phase = Phase.RUNNING) -> None:
        now = time.time()
        self.store.insert_sandbox(SandboxRecord(
            id=sandbox_id, name=sandbox_id, environment="debian:12", phase=phase, vcpus=1,
            mem_mib=512, created_at=now, updated_at=now, expires_at=expires_at,
        ))  # fmt: skip

    async def terminate(self, sandbox_id: str) -> None:
        kinds = [e.kind for e in self.store.events(sandbox_id)]
        assert "expired" in kinds, "the expired event comes before the terminate"
        if sandbox_id in self.fail:
            raise GroveError("terminate_failed", "no", "retry")
        self.terminated.append((sandbox_id, time.time()))
        self.store.update_sandbox(sandbox_id, phase=Phase.TERMINATED)

    def kinds(self, sandbox_id: str) -> list[str]:
        return [e.kind for e in self.store.events(sandbox_id)]


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.store.close()


def timers(loop: asyncio.AbstractEventLoop) -> int:
    """The reaper's timers scheduled on loop (asyncio keeps them in loop._scheduled)."""
    scheduled = getattr(loop, "_scheduled", [])
    return sum(
        1
        for h in scheduled
        if not h.cancelled() and getattr(h._callback, "__name__", "") == "_fire"
    )


async def test_no_timer_without_ttls(harness: Harness) -> None:
    harness.add("sb-a", None)
    harness.add("sb-b", time.time() - 10, Phase.TERMINATED)  # expired long ago, but gone
    await harness.reaper.start()
    assert harness.reaper.armed_for is None
    assert timers(asyncio.get_running_loop()) == 0
    assert harness.terminated == []


async def test_one_timer_for_the_earliest_and_rearmed_on_each_change(harness: Harness) -> None:
    loop = asyncio.get_running_loop()
    now = time.time()
    harness.add("sb-late", now + 500)
    harness.add("sb-soon", now + 200)
    harness.add("sb-none", None)
    harness.add("sb-gone", now + 1, Phase.TERMINATED)
    reaper = harness.reaper
    await reaper.start()
    assert reaper.armed_for == (now + 200, "sb-soon")
    assert timers(loop) == 1
    # A TTL set earlier than any other takes the timer; still one timer.
    expires = await reaper.set_ttl("sb-none", 100)
    assert expires is not None and abs(expires - (time.time() + 100)) < 1
    assert reaper.armed_for == (expires, "sb-none") and timers(loop) == 1
    # Cleared: back to the next earliest.
    assert await reaper.set_ttl("sb-none", None) is None
    assert harness.store.get_sandbox("sb-none").expires_at is None  # type: ignore[union-attr]
    assert reaper.armed_for == (now + 200, "sb-soon") and timers(loop) == 1
    assert harness.kinds("sb-none") == ["ttl", "ttl"]  # watchers hear of both changes
    # A sandbox terminated by someone else: the next arm skips it.
    harness.store.update_sandbox("sb-soon", phase=Phase.TERMINATED)
    reaper.arm()
    assert reaper.armed_for == (now + 500, "sb-late") and timers(loop) == 1
    await reaper.close()
    assert reaper.armed_for is None and timers(loop) == 0
    reaper.arm()  # closed: a late re-arm (a terminate during shutdown) arms nothing
    assert timers(loop) == 0


async def test_expiries_fire_in_order_on_time(harness: Harness) -> None:
    now = time.time()
    harness.add("sb-2", now + 0.4)
    harness.add("sb-1", now + 0.2)
    harness.add("sb-keep", now + 60)
    await harness.reaper.start()
    deadline = time.monotonic() + 5
    while len(harness.terminated) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert [sid for sid, _ in harness.terminated] == ["sb-1", "sb-2"]
    for sandbox_id, at in harness.terminated:
        expires_at = harness.store.get_sandbox(sandbox_id).expires_at  # type: ignore[union-attr]
        assert expires_at is not None
        assert 0 <= at - expires_at < 0.3, (sandbox_id, at - expires_at)
        [event] = [e for e in harness.store.events(sandbox_id) if e.kind == "expired"]
        assert event.detail["expires_at"] == expires_at and event.detail["late_ms"] >= 0
    assert harness.reaper.armed_for is not None and harness.reaper.armed_for[1] == "sb-keep"
    await harness.reaper.close()


async def test_expired_while_no_engine_ran_is_reaped_at_start(harness: Harness) -> None:
    harness.add("sb-old", time.time() - 3600)
    harness.add("sb-stopped", time.time() - 5, Phase.STOPPED)  # a stopped one expires too
    await harness.reaper.start()  # reaps before it returns: before the engine serves
    assert sorted(sid for sid, _ in harness.terminated) == ["sb-old", "sb-stopped"]
    assert harness.reaper.armed_for is None


async def test_a_failed_terminate_is_retried_not_spun(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reaper_module, "RETRY_S", 0.2)
    harness.add("sb-stuck", time.time() - 1)
    harness.fail.add("sb-stuck")
    await harness.reaper.start()
    assert harness.terminated == []
    armed = harness.reaper.armed_for
    assert armed is not None and armed[0] > time.time()  # a retry later, not a tight loop
    harness.fail.clear()
    deadline = time.monotonic() + 5
    while not harness.terminated and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert [sid for sid, _ in harness.terminated] == ["sb-stuck"]
    assert harness.kinds("sb-stuck").count("expired") == 1


async def test_new_sandboxes_get_the_default_unless_told(harness: Harness) -> None:
    reaper = harness.reaper
    assert reaper.expiry(None) is None and reaper.expiry(0) is None
    reaper.default_ttl = 600
    harness.add("sb-d", None)
    harness.add("sb-z", None)
    expires = await reaper.apply("sb-d", None)
    assert expires is not None and abs(expires - (time.time() + 600)) < 1
    assert await reaper.apply("sb-z", 0) is None  # 0: no limit, whatever the default
    assert harness.store.get_sandbox("sb-z").expires_at is None  # type: ignore[union-attr]
    assert harness.kinds("sb-z") == []
    assert reaper.armed_for == (expires, "sb-d")
    await reaper.close()
