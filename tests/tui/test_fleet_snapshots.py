"""Snapshots of a two-host fleet with one host reconnecting, in every bundled theme.

Update after an intended visual change with: pytest tests/tui --snapshot-update
"""

from __future__ import annotations

import pytest
from conftest import NO_STALL_S, SIZE, loaded, wait_for
from textual.pilot import Pilot

from tui.app import GroveApp
from tui.engine.fake import FAKE_NOW, FakeEngine
from tui.state import Link, join


def fleet(theme: str) -> GroveApp:
    hosts = {
        "kvm-a": FakeEngine(where="ssh://grove@kvm-a"),
        "kvm-b": FakeEngine(where="ssh://grove@kvm-b", population=5, id_base=0xD0000000),
    }
    app = GroveApp(
        hosts,  # type: ignore[arg-type]
        theme=theme,
        now=lambda: FAKE_NOW,
        user_themes=False,
        stall_s=NO_STALL_S,  # the fakes go quiet after their history, on purpose
    )
    app.animation_level = "none"
    return app


async def _one_host_reconnecting(pilot: Pilot[None]) -> None:
    app = pilot.app
    assert isinstance(app, GroveApp)
    screen = await loaded(pilot, sandboxes=11, events=1)
    screen.controller.select(join("kvm-a", "sb-1f3a9c20"))
    await pilot.pause(0.05)
    kvm_b = screen.controller.gateway("kvm-b")
    assert isinstance(kvm_b, FakeEngine)
    kvm_b.drop()
    await wait_for(pilot, lambda: app.state.hosts["kvm-b"].link is Link.RECONNECTING)
    await wait_for(pilot, lambda: screen.settled)
    await pilot.pause(0.2)
    await pilot.wait_for_scheduled_animations()


@pytest.mark.parametrize("theme", ["grove-dark", "grove-light", "projector"])
def test_fleet_with_a_host_reconnecting(snap_compare: object, theme: str) -> None:
    assert snap_compare(fleet(theme), run_before=_one_host_reconnecting, terminal_size=SIZE)  # type: ignore[operator]
