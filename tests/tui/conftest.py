"""Dashboard test fixtures: deterministic clocks and time zone, no user themes, helpers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping

import pytest
from textual.pilot import Pilot

from tui.app import GroveApp
from tui.engine.fake import FAKE_NOW, FakeEngine
from tui.engine.gateway import EngineGateway
from tui.screens.main import MainScreen
from tui.state import SandboxKey, join

SIZE = (140, 40)
FAKE_SANDBOXES = 6
FAKE_EVENTS = len(FakeEngine()._events)
#: FakeEngine's metering goes quiet after its history (the screen stays still), which a link's
#: watchdog would take for a hung engine: tests that do not test hangs wait it out for good.
NO_STALL_S = 1e9


def key(sandbox_id: str, host: str = "local") -> SandboxKey:
    """The fleet key of a sandbox (table row key, tree node id) of the one fake host."""
    return join(host, sandbox_id)


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Event times render as HH:MM:SS in local time: pin it so snapshots match anywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def fake_app(
    theme: str | None = None,
    read_only: bool = False,
    hosts: Mapping[str, EngineGateway] | None = None,
    gateway: EngineGateway | None = None,
    stall_s: float = NO_STALL_S,
    **engine: object,
) -> GroveApp:
    """The dashboard on `hosts`, or on `gateway` as "local", or on a FakeEngine(**engine)."""
    if hosts is None:
        hosts = {"local": gateway if gateway is not None else FakeEngine(**engine)}  # type: ignore[arg-type]
    app = GroveApp(
        dict(hosts),
        theme=theme,
        read_only=read_only,
        now=lambda: FAKE_NOW,
        stall_s=stall_s,
        user_themes=False,
    )
    app.animation_level = "none"
    return app


async def wait_for(
    pilot: Pilot[None], predicate: Callable[[], bool], timeout: float = 15, what: str = ""
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await pilot.pause(0.02)


async def loaded(
    pilot: Pilot[None], sandboxes: int = FAKE_SANDBOXES, events: int = FAKE_EVENTS
) -> MainScreen:
    """Wait until the inventory, the metering history and the event replay have all landed."""
    app = pilot.app
    await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), what="main screen")
    screen = app.screen
    assert isinstance(screen, MainScreen)
    state = screen.state
    answering = [h for h in state.hosts.values() if h.link.value != "unreachable"]
    await wait_for(
        pilot, lambda: sum(len(h.sandboxes) for h in answering) == sandboxes, what="sandboxes"
    )
    await wait_for(
        pilot,
        lambda: all(h.meters.ts is not None or h.metering_note for h in answering),
        what="metering",
    )
    await wait_for(pilot, lambda: state.events_total >= events, what="events")
    await services_shown(pilot, screen)
    await wait_for(pilot, lambda: screen.settled, what="the last paint")
    await pilot.pause(0.1)
    await pilot.wait_for_scheduled_animations()
    return screen


async def services_shown(pilot: Pilot[None], screen: MainScreen) -> None:
    """The selected sandbox's services are listed (or the engine has none to list)."""
    await wait_for(
        pilot,
        lambda: (
            screen.state.selected is not None
            and screen.controller.services_known(screen.state.selected)
        ),
        what="services",
    )
