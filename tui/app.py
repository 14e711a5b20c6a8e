"""grove ui: the full-screen dashboard.

grove ui [--theme NAME] [--read-only] [--demo]
python -m tui [--theme NAME] [--read-only] [--demo] [--fake]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path, PurePath
from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType

from tui.commands import GroveCommands
from tui.engine.gateway import EngineGateway
from tui.screens.help import KeyMapScreen
from tui.screens.main import MainScreen
from tui.themes import DEFAULT_THEME, VARIABLE_DEFAULTS, load_themes
from tui.widgets.log_view import LogView
from tui.widgets.terminal import PtyTerminal

HERE = Path(__file__).resolve().parent
WIDGET_CSS = ["bars", "lineage_tree", "metering_table", "usage", "log_view", "shells"]


class GroveApp(App[None]):
    TITLE = "Grove"
    CSS_PATH: ClassVar[list[str | PurePath]] = [
        HERE / "app.tcss",
        *(HERE / "widgets" / f"{name}.tcss" for name in WIDGET_CSS),
    ]
    COMMANDS = App.COMMANDS | {GroveCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "show_keys", "Keys", key_display="?"),
    ]

    def __init__(
        self,
        gateway: EngineGateway,
        *,
        theme: str | None = None,
        read_only: bool = False,
        demo: bool = False,
        now: Callable[[], float] = time.time,
        refresh_interval: float | None = 1.5,
        meter_interval: float = 1.0,
        user_themes: bool = True,
    ) -> None:
        super().__init__()
        self.gateway = gateway
        self.read_only = read_only
        self.demo = demo
        self.now = now
        self.refresh_interval = refresh_interval
        self.meter_interval = meter_interval
        themes = load_themes(include_user=user_themes)
        self.theme_errors = themes.errors
        self.grove_theme_names = sorted(themes.themes)
        # Registered before mount, as the first theme applies when the CSS is first parsed.
        for grove_theme in themes.themes.values():
            self.register_theme(grove_theme)
        wanted = theme or DEFAULT_THEME
        self._unknown_theme = None if wanted in self.available_themes else wanted
        self.theme = wanted if self._unknown_theme is None else self._fallback_theme()

    def _fallback_theme(self) -> str:
        return DEFAULT_THEME if DEFAULT_THEME in self.available_themes else "textual-dark"

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return dict(VARIABLE_DEFAULTS)

    def on_mount(self) -> None:
        self.push_screen(MainScreen())
        if self._unknown_theme:
            names = ", ".join(self.grove_theme_names)
            self.notify(
                f"No theme named '{self._unknown_theme}'; using {self.theme}.\n"
                f"→ choose one of: {names}",
                severity="warning",
            )
        for error in self.theme_errors:
            self.notify(error, title="Theme file skipped", severity="warning")

    def action_show_keys(self) -> None:
        if isinstance(self.screen, KeyMapScreen):
            return
        groups = [
            ("Dashboard", MainScreen.BINDINGS),
            ("Logs (when focused)", LogView.BINDINGS),
            ("Shell (when focused)", PtyTerminal.BINDINGS),
            ("Everywhere", [*self.BINDINGS, Binding("ctrl+p", "", "Command palette")]),
        ]
        self.push_screen(KeyMapScreen(groups, read_only=self.read_only))

    async def on_unmount(self) -> None:
        await self.gateway.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grove ui", description="The Grove dashboard.")
    add_arguments(parser)
    parser.add_argument("--fake", action="store_true", help="demo data instead of an engine")
    parser.add_argument(
        "--fake-sandboxes",
        type=int,
        metavar="N",
        help="with --fake: N generated sandboxes (for benchmarks)",
    )
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--theme", help=f"colour theme (default {DEFAULT_THEME})")
    parser.add_argument("--read-only", action="store_true", help="disable every change")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="a scripted tour on real sandboxes: a service, forks, a shell",
    )


def make_app(
    theme: str | None = None,
    read_only: bool = False,
    demo: bool = False,
    fake: bool = False,
    fake_sandboxes: int | None = None,
) -> GroveApp:
    gateway: EngineGateway
    if fake:
        from tui.engine.fake import FakeEngine

        gateway = FakeEngine(now=time.time(), live_interval=1.0, population=fake_sandboxes)
    else:
        from tui.engine.grpc_gateway import GrpcGateway

        gateway = GrpcGateway()
    return GroveApp(gateway, theme=theme, read_only=read_only, demo=demo)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    make_app(args.theme, args.read_only, args.demo, args.fake, args.fake_sandboxes).run()
    return 0
