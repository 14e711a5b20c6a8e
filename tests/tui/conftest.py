"""Dashboard test fixtures: deterministic clocks and time zone, no user themes, helpers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
from textual.pilot import Pilot

from tui.app import GroveApp
from tui.engine.fake import FAKE_NOW, FakeEngine
from tui.screens.main import MainScreen

SIZE = (140, 40)
FAKE_SANDBOXES = 6
FAKE_EVENTS = len(FakeEngine()._events)


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Event times render as HH:MM:SS in local time: pin it so snapshots match anywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def fake_app(theme: str | None = None, read_only: bool = False, **engine: object) -> GroveApp:
    app = GroveApp(
        FakeEngine(**engine),  # type: ignore[arg-type]
        theme=theme,
        read_only=read_only,
        now=lambda: FAKE_NOW,
        refresh_interval=None,  # nothing ticks: the screen only changes when the test acts
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
    await wait_for(pilot, lambda: len(screen.sandboxes) == sandboxes, what="sandboxes")
    await wait_for(
        pilot, lambda: screen.meters.ts is not None or bool(screen.metering_note), what="metering"
    )
    await wait_for(pilot, lambda: len(screen._event_log) >= events, what="events")
    await services_shown(pilot, screen)
    await pilot.pause(0.1)
    await pilot.wait_for_scheduled_animations()
    return screen


async def services_shown(pilot: Pilot[None], screen: MainScreen) -> None:
    """The selected sandbox's services are listed (or the engine has none to list)."""
    await wait_for(
        pilot,
        lambda: screen.selected_id in screen.services or not screen._services_supported,
        what="services",
    )
