"""The key map (`?`), generated from the bindings themselves so it cannot drift."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

Group = tuple[str, Sequence[BindingType]]

# Keys that come from Textual's own widgets rather than our bindings.
NAVIGATION: list[BindingType] = [
    Binding("up,down", "", "Move in the tree, table or log"),
    Binding("tab,shift+tab", "", "Next / previous pane"),
    Binding("enter", "", "Expand or collapse a tree node"),
]


def _key_label(binding: Binding) -> str:
    if binding.key_display:
        return binding.key_display
    names = {"slash": "/", "question_mark": "?", "ctrl+right_square_bracket": "ctrl+]"}
    return ", ".join(names.get(k.strip(), k.strip()) for k in binding.key.split(","))


def _bindings(items: Iterable[BindingType]) -> list[Binding]:
    found = []
    for item in items:
        if isinstance(item, Binding):
            found.append(item)
        elif isinstance(item, tuple) and len(item) >= 2:
            found.append(Binding(*item))
    return [b for b in found if b.description]


class KeyMapScreen(ModalScreen[None]):
    CSS_PATH = Path(__file__).with_name("help.tcss")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "Close", show=False),
    ]

    def __init__(self, groups: Sequence[Group], read_only: bool = False) -> None:
        super().__init__()
        self.groups = groups
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        # The dashboard's own keys on the left, the focused widgets' and global ones right.
        first, rest = list(self.groups[:1]), [*self.groups[1:], ("Navigation", NAVIGATION)]
        with VerticalScroll(id="keymap"):
            yield Label("Keys", id="keymap-title")
            with Horizontal(id="keymap-columns"):
                yield Static(self._table(first), classes="keymap-column")
                yield Static(self._table(rest), classes="keymap-column")
            note = "esc, q or ? closes this screen."
            if self.read_only:
                note = "Read-only mode: actions that change sandboxes are disabled. " + note
            yield Static(note, id="keymap-note")

    def _table(self, groups: Sequence[Group]) -> Table:
        table = Table.grid(padding=(0, 2))
        table.add_column(justify="right", style="bold", no_wrap=True)
        table.add_column()
        for title, bindings in groups:
            rows = _bindings(bindings)
            if not rows:
                continue
            table.add_row("", Text(title, style="bold underline"))
            for binding in rows:
                # The tooltip says it in full; the description is the footer's short label.
                table.add_row(_key_label(binding), binding.tooltip or binding.description)
            table.add_row("", "")
        return table
