"""The action table drives keys, palette, help and read-only mode: they cannot disagree."""

from __future__ import annotations

from pathlib import Path

from conftest import SIZE, fake_app, loaded, wait_for
from textual.binding import Binding

from tui.actions import ACTIONS, MUTATING, load_keymap
from tui.app import GroveApp
from tui.commands import GroveCommands
from tui.controller.flows import Flows
from tui.engine.fake import FAKE_NOW, FakeEngine
from tui.screens.dialogs import AskScreen
from tui.screens.help import KeyMapScreen
from tui.screens.main import MainScreen


def test_every_action_is_bound_with_an_id() -> None:
    bound = {b.id: b for b in MainScreen.BINDINGS if isinstance(b, Binding)}
    for action in ACTIONS:
        binding = bound[action.binding_id]
        assert binding.action == f"run('{action.id}')"
        assert binding.key == action.key
        assert callable(getattr(Flows, action.id, None)), f"no flow for {action.id}"


async def test_palette_and_help_list_every_action() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        provider = GroveCommands(screen, None)  # type: ignore[arg-type]
        titles = [title for title, _, _ in provider._commands()]
        for action in ACTIONS:
            if action.palette:
                assert action.palette_title("web", "local") in titles, action.id
        app.action_show_keys()
        await wait_for(pilot, lambda: isinstance(app.screen, KeyMapScreen))
        assert isinstance(app.screen, KeyMapScreen)
        shown = {b.id for _, group in app.screen.groups for b in group if isinstance(b, Binding)}
        assert {a.binding_id for a in ACTIONS} <= shown


async def test_read_only_refuses_every_mutating_action() -> None:
    engine_app = fake_app(read_only=True)
    async with engine_app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        engine = screen.controller.gateway("local")
        before = list(engine.calls)  # type: ignore[attr-defined]
        for action in ACTIONS:
            if action.id in MUTATING:
                assert screen.check_action("run", (action.id,)) is None, action.id
                screen.run_action_by_name(action.id)
                await pilot.press(action.key)
        await pilot.pause(0.2)
        assert isinstance(engine_app.screen, MainScreen)  # no dialog opened
        assert engine.calls == before  # type: ignore[attr-defined]
        provider = GroveCommands(screen, None)  # type: ignore[arg-type]
        titles = " ".join(t for t, _, _ in provider._commands())
        assert "Terminate" not in titles and "Fork" not in titles


async def test_keymap_file_remaps_a_key(tmp_path: Path) -> None:
    path = tmp_path / "keymap.yaml"
    path.write_text("fork: ctrl+f\nnonsense: x\nstop: ''\n")
    keymap, errors = load_keymap(path)
    assert keymap == {"grove.fork": "ctrl+f"}
    assert len(errors) == 2 and "nonsense" in errors[0]
    app = GroveApp(FakeEngine(), now=lambda: FAKE_NOW, user_themes=False, keymap=keymap)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("ctrl+f")
        await wait_for(pilot, lambda: isinstance(app.screen, AskScreen), what="fork dialog")
        assert isinstance(app.screen, AskScreen)
        assert "1 to 64" in app.screen.prompt  # the engine's limit, not a constant


def test_unreadable_keymap_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "keymap.yaml"
    path.write_text("fork: [unclosed\n")
    keymap, errors = load_keymap(path)
    assert keymap == {} and "cannot read" in errors[0]
