"""Command palette entries: sandbox actions for the selection, and Grove's themes."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tui.screens.main import MUTATING, MainScreen

if TYPE_CHECKING:
    from tui.app import GroveApp

Command = tuple[str, str, Callable[[], object]]


class GroveCommands(Provider):
    def _commands(self) -> list[Command]:
        app: GroveApp = self.app  # type: ignore[assignment]
        screen = self.screen
        commands: list[Command] = []
        if isinstance(screen, MainScreen):
            selected = screen.selected
            label = selected.label if selected else "the selected sandbox"
            actions = [
                ("create", "Create sandbox", "Create a sandbox from an environment"),
                ("terminate", f"Terminate {label}", "Destroy it (asks first)"),
                ("stop", f"Stop {label}", "Stop it; its disk is kept"),
                ("start", f"Start {label}", "Boot it again from its disk"),
                (
                    "open_shell",
                    f"Open a shell in {label}",
                    "A new shell in a tab, or attach to a running one",
                ),
                ("fork", f"Fork {label}", "Snapshot-fork it into N children"),
                ("snapshot", f"Snapshot {label}", "Freeze it as a named lineage node"),
                ("reset", f"Reset {label}", "Back to a named snapshot or to how it was created"),
                (
                    "start_service",
                    f"Start a service in {label}",
                    "A supervised process with an optional readiness probe",
                ),
                ("stop_service", f"Stop a service in {label}", "TERM, then KILL after 5 s"),
                ("service_logs", f"Follow a service log of {label}", "Opens a log tab"),
                ("close_tab", "Close the shell or log tab", "A shell keeps running; attach again"),
                ("filter", "Filter sandboxes", "Show only matching sandboxes"),
                ("show_logs", "Show lifecycle events", "Focus the Events tab"),
            ]
            for action, title, help_ in actions:
                if action in MUTATING and app.read_only:
                    continue
                commands.append((title, help_, partial(screen.run_action_by_name, action)))
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
