"""grove ui: the full-screen dashboard, of one engine or a fleet of them.

grove ui [--host H ...] [--all-hosts] [--theme NAME] [--read-only] [--demo]
python -m tui [--theme NAME] [--read-only] [--demo] [--fake [--fake-hosts N]]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType

from tui.actions import load_keymap
from tui.commands import GroveCommands
from tui.engine.gateway import EngineGateway
from tui.screens.help import Group, KeyMapScreen
from tui.screens.main import MainScreen
from tui.state import DashboardState
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
        gateway: EngineGateway | Mapping[str, EngineGateway],
        *,
        theme: str | None = None,
        read_only: bool = False,
        demo: bool = False,
        now: Callable[[], float] = time.time,
        meter_interval: float = 1.0,
        stall_s: float | None = None,
        user_themes: bool = True,
        keymap: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        #: The engines shown, by host name; one gateway is a fleet of one ("local").
        self.gateways: dict[str, EngineGateway] = (
            dict(gateway) if isinstance(gateway, Mapping) else {"local": gateway}
        )
        self.state = DashboardState()
        self.read_only = read_only
        self.demo = demo
        self.now = now
        self.meter_interval = meter_interval
        self.stall_s = stall_s
        self.keymap_errors: list[str] = []
        if keymap is None and user_themes:
            keymap, self.keymap_errors = load_keymap()
        if keymap:
            self.set_keymap(dict(keymap))
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
        for error in self.keymap_errors:
            self.notify(error, title="Key map entry skipped", severity="warning")

    @property
    def gateway(self) -> EngineGateway:
        """The first host's gateway (the one a single-host dashboard has)."""
        return next(iter(self.gateways.values()))

    def action_show_keys(self) -> None:
        if isinstance(self.screen, KeyMapScreen):
            return
        groups: list[Group] = [
            ("Dashboard", self.screen_bindings()),
            ("Logs (when focused)", LogView.BINDINGS),
            ("Shell (when focused)", PtyTerminal.BINDINGS),
            ("Everywhere", [*self.BINDINGS, Binding("ctrl+p", "", "Command palette")]),
        ]
        self.push_screen(KeyMapScreen(groups, read_only=self.read_only))

    def screen_bindings(self) -> list[Binding]:
        """The dashboard's bindings with the keys the user's key map gave them."""
        keymap = self._keymap
        return [
            Binding(
                keymap.get(b.id, b.key),
                b.action,
                b.description,
                show=b.show,
                key_display=None if b.id in keymap else b.key_display,
                tooltip=b.tooltip,
                id=b.id,
            )
            for b in MainScreen.BINDINGS
            if isinstance(b, Binding) and b.id
        ]

    async def on_unmount(self) -> None:
        for gateway in self.gateways.values():
            await gateway.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grove ui", description="The Grove dashboard.")
    add_arguments(parser)
    parser.add_argument("--fake", action="store_true", help="demo data instead of an engine")
    parser.add_argument(
        "--fake-sandboxes",
        type=int,
        metavar="N",
        help="with --fake: N generated sandboxes per host (for benchmarks)",
    )
    parser.add_argument(
        "--fake-hosts", type=int, metavar="N", default=1, help="with --fake: N fake hosts"
    )
    parser.add_argument(
        "--fake-unreachable",
        type=int,
        metavar="N",
        default=0,
        help="with --fake: N more hosts that refuse connections",
    )
    parser.add_argument(
        "--with-engine",
        action="store_true",
        help="with --fake: the real engine of GROVE_HOME too, as host 'local'",
    )
    parser.add_argument(
        "--fake-hung",
        type=int,
        metavar="N",
        default=0,
        help="with --fake: N more hosts whose connections hang",
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
    fake_hosts: int = 1,
    fake_unreachable: int = 0,
    fake_hung: int = 0,
    with_engine: bool = False,
) -> GroveApp:
    gateways: dict[str, EngineGateway] = {}
    if with_engine or not fake:
        from tui.engine.grpc_gateway import GrpcGateway

        gateways["local"] = GrpcGateway()
    if fake:
        from tui.engine.fake import FakeEngine, fake_fleet

        if fake_hosts == 1 and not fake_unreachable and not fake_hung and not with_engine:
            gateways["local"] = FakeEngine(
                now=time.time(), live_interval=1.0, population=fake_sandboxes
            )
        else:
            gateways.update(
                fake_fleet(
                    fake_hosts, fake_sandboxes, fake_unreachable, now=time.time(), hung=fake_hung
                )
            )
    return GroveApp(gateways, theme=theme, read_only=read_only, demo=demo)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    app = make_app(
        args.theme,
        args.read_only,
        args.demo,
        args.fake,
        args.fake_sandboxes,
        args.fake_hosts,
        args.fake_unreachable,
        args.fake_hung,
        args.with_engine,
    )
    app.run()
    return app.return_code or 0
