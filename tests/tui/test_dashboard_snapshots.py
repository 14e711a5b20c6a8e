"""Snapshots of the dashboard against FakeEngine: each theme, the key map, the dialogs, a file
transfer.

Update after an intended visual change with: pytest tests/tui --snapshot-update
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import SIZE, fake_app, key, loaded, services_shown, wait_for
from textual.pilot import Pilot
from textual.widgets import Input

from tui.engine.fake import FakeEngine
from tui.screens.dialogs import ChooseScreen, ConfirmScreen, FilesScreen, ServiceScreen
from tui.screens.help import KeyMapScreen
from tui.widgets.bars import TransferLine
from tui.widgets.service_logs import ServiceLogPane
from tui.widgets.shells import ShellsPane


async def _select_web(pilot: Pilot[None]) -> None:
    screen = await loaded(pilot)
    screen.metering_table.select_sandbox(key("sb-1f3a9c20"))
    await pilot.pause(0.05)
    await services_shown(pilot, screen)
    await pilot.pause(0.05)


def _no_blink(pilot: Pilot[None]) -> None:
    for box in pilot.app.screen.query(Input):
        box.cursor_blink = False


@pytest.mark.parametrize("theme", ["grove-dark", "grove-light", "projector"])
def test_main_screen(snap_compare: object, theme: str) -> None:
    assert snap_compare(fake_app(theme), run_before=_select_web, terminal_size=SIZE)  # type: ignore[operator]


def test_main_screen_read_only(snap_compare: object) -> None:
    assert snap_compare(fake_app(read_only=True), run_before=_select_web, terminal_size=SIZE)  # type: ignore[operator]


def test_keymap_screen(snap_compare: object) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await _select_web(pilot)
        await pilot.press("question_mark")
        await pilot.pause(0.1)
        assert isinstance(pilot.app.screen, KeyMapScreen)

    assert snap_compare(fake_app(), run_before=run_before, terminal_size=SIZE)  # type: ignore[operator]


def test_confirm_terminate(snap_compare: object) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await _select_web(pilot)
        await pilot.press("d")
        await pilot.pause(0.1)
        assert isinstance(pilot.app.screen, ConfirmScreen)

    assert snap_compare(fake_app(), run_before=run_before, terminal_size=SIZE)  # type: ignore[operator]


def test_engine_without_metering(snap_compare: object) -> None:
    """Today's engine: no metering stream, so every metering cell is '-', never 0."""
    assert snap_compare(  # type: ignore[operator]
        fake_app(features=()), run_before=_select_web, terminal_size=SIZE
    )


def test_shell_tab(snap_compare: object) -> None:
    """A shell tab (FakeEngine's line shell) rendered by the terminal widget, cursor and all."""

    async def run_before(pilot: Pilot[None]) -> None:
        await _select_web(pilot)
        await pilot.press("o")
        screen = pilot.app.screen
        pane = screen.query_one(ShellsPane)
        await wait_for(pilot, lambda: bool(pane.views), what="shell tab")
        term = pane.views[0].terminal
        await wait_for(pilot, lambda: any("root@web" in ln for ln in term.screen_lines()))
        await pilot.press(*"echo", "space", *"hello", "enter")
        await wait_for(pilot, lambda: "hello" in term.screen_lines(), what="echo")
        await pilot.pause(0.1)

    assert snap_compare(fake_app(), run_before=run_before, terminal_size=SIZE)  # type: ignore[operator]


def test_filter_bar(snap_compare: object) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await loaded(pilot)
        await pilot.press("slash", *"fork")
        pilot.app.screen.query_one("#filter", Input).cursor_blink = False
        await pilot.pause(0.1)

    assert snap_compare(fake_app(), run_before=run_before, terminal_size=SIZE)  # type: ignore[operator]


def test_service_log_tab(snap_compare: object) -> None:
    """A service's log in its own tab, followed, with a search highlighting its matches."""

    async def run_before(pilot: Pilot[None]) -> None:
        await _select_web(pilot)
        await pilot.press("L")
        screen = pilot.app.screen
        await wait_for(pilot, lambda: bool(screen.query(ServiceLogPane)), what="log tab")
        log = screen.query_one(ServiceLogPane)
        await wait_for(pilot, lambda: len(log.view.entries) == 14, what="the tail")
        log.view.focus()
        await pilot.press("slash", *"api", "enter")
        _no_blink(pilot)
        await pilot.pause(0.1)

    assert snap_compare(fake_app(), run_before=run_before, terminal_size=SIZE)  # type: ignore[operator]


def test_start_service_form(snap_compare: object) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await _select_web(pilot)
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ServiceScreen))
        await pilot.press(*"api", "tab")
        _no_blink(pilot)
        await pilot.pause(0.1)

    assert snap_compare(fake_app(), run_before=run_before, terminal_size=SIZE)  # type: ignore[operator]


def test_shell_attach_choice(snap_compare: object) -> None:
    """With a shell still running in the sandbox, `o` offers to attach to it."""

    async def run_before(pilot: Pilot[None]) -> None:
        await _select_web(pilot)
        await pilot.press("o")
        pane = pilot.app.screen.query_one(ShellsPane)
        await wait_for(pilot, lambda: bool(pane.views), what="shell tab")
        await pilot.press("ctrl+right_square_bracket", "C")
        await wait_for(pilot, lambda: not pane.views, what="tab closed")
        await pilot.press("o")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ChooseScreen))
        await pilot.pause(0.1)

    assert snap_compare(fake_app(), run_before=run_before, terminal_size=SIZE)  # type: ignore[operator]


def _in_a_project(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A ./proj to push, so the paths on screen are the same on every run."""
    (tmp_path / "proj").mkdir()
    monkeypatch.chdir(tmp_path)


def test_files_dialog(
    snap_compare: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`f` on a sandbox: push chosen, the guest path following the local one."""
    _in_a_project(monkeypatch, tmp_path)

    async def run_before(pilot: Pilot[None]) -> None:
        await _select_web(pilot)
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, FilesScreen))
        await pilot.press(*"./proj")
        await wait_for(
            pilot, lambda: pilot.app.screen.query_one("#files-guest", Input).value == "/root/proj"
        )
        _no_blink(pilot)
        await pilot.pause(0.1)

    assert snap_compare(fake_app(), run_before=run_before, terminal_size=SIZE)  # type: ignore[operator]


def test_files_push_progress(
    snap_compare: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A push under way on the status line: route, share, amount and rate (the fake's fixed
    steps, held at 42%)."""
    _in_a_project(monkeypatch, tmp_path)
    engine = FakeEngine()
    engine.transfer_gate = asyncio.Event()

    async def run_before(pilot: Pilot[None]) -> None:
        await _select_web(pilot)
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, FilesScreen))
        await pilot.press(*"./proj", "tab", "enter")
        line = pilot.app.screen.query_one(TransferLine)
        await wait_for(pilot, lambda: "9.1 MiB/s" in str(line.render()), what="the progress")
        assert engine.transfers == [("push", "sb-1f3a9c20", "proj", "/root/proj")]
        _no_blink(pilot)
        await pilot.pause(0.1)

    assert snap_compare(fake_app(gateway=engine), run_before=run_before, terminal_size=SIZE)  # type: ignore[operator]
