"""The dashboard against the real engine: a sandbox made with the CLI shows up in the tree and
the table, and terminating it from the dashboard (after confirming) removes it."""

from __future__ import annotations

import json

import pytest
from conftest import SIZE, wait_for

from engine.config import Paths
from tui.app import GroveApp
from tui.engine.grpc_gateway import GrpcGateway
from tui.screens.dialogs import ConfirmScreen
from tui.screens.main import MainScreen
from tui.widgets.shells import ShellsPane

pytestmark = pytest.mark.vm


async def test_dashboard_sees_and_terminates_a_real_sandbox(
    grove: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = grove.home  # type: ignore[attr-defined]
    monkeypatch.setenv("GROVE_HOME", str(home))
    sandbox_id = grove.ok("sandbox", "create", "debian:12", "--name", "dash-e2e").out.strip()  # type: ignore[attr-defined]
    app = GroveApp(GrpcGateway(Paths(home), autostart=False), refresh_interval=0.5,
                   user_themes=False)
    app.animation_level = "none"
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), what="main screen")
        screen = app.screen
        assert isinstance(screen, MainScreen)
        table, tree = screen.metering_table, screen.lineage_tree
        await wait_for(pilot, lambda: sandbox_id in screen.sandboxes, timeout=30,
                       what="the sandbox in the inventory")
        await wait_for(pilot, lambda: sandbox_id in [str(k.value) for k in table.rows],
                       what="the sandbox in the table")
        assert sandbox_id in tree._by_id
        parent = tree._by_id[sandbox_id].parent
        assert parent is not None and parent.data is not None
        assert parent.data.kind == "environment" and parent.data.label == "debian:12"
        assert str(table.get_cell(sandbox_id, "name")) == "dash-e2e"
        assert "running" in str(table.get_cell(sandbox_id, "phase"))
        assert screen.info is not None and screen.info.pid > 0
        await wait_for(pilot, lambda: any("dash-e2e" in line and "created" in line
                                          for line in screen.query_one("#log-view").entries),
                       what="its lifecycle event in the log")

        table.focus()
        table.select_sandbox(sandbox_id)
        await pilot.pause()
        assert screen.selected_id == sandbox_id
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        await pilot.press("y")
        await wait_for(pilot, lambda: sandbox_id not in screen.sandboxes, timeout=60,
                       what="the sandbox to go")
        await wait_for(pilot, lambda: sandbox_id not in [str(k.value) for k in table.rows],
                       what="its row to go")
        assert sandbox_id not in tree._by_id
        errors = [n for n in app._notifications if n.severity == "error"]
        assert not errors, [n.message for n in errors]

    listed = json.loads(grove.ok("ps", "--json").out)  # type: ignore[attr-defined]
    assert sandbox_id not in [s["id"] for s in listed]


async def test_dashboard_shell_in_a_real_guest(
    grove: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = grove.home  # type: ignore[attr-defined]
    monkeypatch.setenv("GROVE_HOME", str(home))
    sandbox_id = grove.ok("sandbox", "create", "debian:12", "--name", "dash-shell").out.strip()  # type: ignore[attr-defined]
    app = GroveApp(GrpcGateway(Paths(home), autostart=False), refresh_interval=0.5,
                   user_themes=False)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
            screen = app.screen
            assert isinstance(screen, MainScreen)
            await wait_for(pilot, lambda: sandbox_id in screen.sandboxes, timeout=30)
            screen.metering_table.select_sandbox(sandbox_id)
            await pilot.pause()
            await pilot.press("o")
            pane = screen.query_one(ShellsPane)
            await wait_for(pilot, lambda: bool(pane.views) or any(
                n.title == "Not available yet" for n in app._notifications), timeout=30)
            if not pane.views:
                pytest.skip("this engine has no interactive shells")
            term = pane.views[0].terminal
            await wait_for(pilot, lambda: any(ln.rstrip().endswith(("#", "$"))
                                              for ln in term.screen_lines()), timeout=30)
            await pilot.press(*"echo", "space", *"guest-ok", "enter")
            await wait_for(pilot, lambda: "guest-ok" in term.screen_lines(), timeout=20)
            await pilot.press(*"stty", "space", *"size", "enter")
            size = f"{term.vt.lines} {term.vt.columns}"
            await wait_for(pilot, lambda: size in term.screen_lines(), timeout=20,
                           what=f"stty size {size}")
    finally:
        grove.run("sandbox", "terminate", sandbox_id)  # type: ignore[attr-defined]
