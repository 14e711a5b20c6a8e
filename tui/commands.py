"""Command palette entries: the action table's actions for the selection, and the themes."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tui.actions import ACTIONS
from tui.screens.main import MainScreen

if TYPE_CHECKING:
    from tui.app import GroveApp

Command = tuple[str, str, Callable[[], object]]


class GroveCommands(Provider):
    def _commands(self) -> list[Command]:
        app: GroveApp = self.app  # type: ignore[assignment]
        screen = self.screen
        commands: list[Command] = []
        if isinstance(screen, MainScreen):
            selected = screen.state.selected_sandbox()
            label = selected.label if selected else "the selected sandbox"
            host = screen.flows.target_host() or "a host"
            for action in ACTIONS:
                if not action.palette or (action.mutating and app.read_only):
                    continue
                commands.append(
                    (
                        action.palette_title(label, host),
                        action.help,
                        partial(screen.run_action_by_name, action.id),
                    )
                )
        for name in app.grove_theme_names:
            commands.append(
                (
                    f"Theme: {name}",
                    "Switch the dashboard's colours",
                    partial(setattr, app, "theme", name),
                )
            )
        commands.append(("Show keys", "The key map", app.action_show_keys))
        return commands

    async def discover(self) -> Hits:
        for title, help_, callback in self._commands():
            yield DiscoveryHit(title, callback, help=help_)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_, callback in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_)
