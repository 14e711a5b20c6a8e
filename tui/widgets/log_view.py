"""A log pane: line-API view with batched appends, follow, pause, wrap, `/` search and copy.

Appends are incremental (only new lines are laid out and searched), and the kept history is
trimmed in steps, so a flood costs per new line rather than per line kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import ClassVar

from rich.segment import Segment
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.containers import Vertical
from textual.content import Content
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Input, Static

_TIMESTAMP = re.compile(r"(\d\d-\d\d )?\d\d:\d\d:\d\d(\.\d+)?")


class LogView(ScrollView, can_focus=True):
    """Lines are kept as plain text; wrapping and highlighting happen at paint time."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "logview--match",
        "logview--current",
        "logview--time",
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "search", "Search", tooltip="Search; matches are highlighted"),
        Binding("n", "next_match", "Next match", show=False),
        Binding("N", "previous_match", "Previous match", show=False),
        Binding("f", "toggle_follow", "Follow", tooltip="Follow new lines (on/off)"),
        Binding("p", "toggle_pause", "Pause", tooltip="Pause the view (new lines wait, counted)"),
        Binding("w", "toggle_wrap", "Wrap", tooltip="Wrap long lines (on/off)"),
        Binding("y", "copy", "Copy", tooltip="Copy matching lines (all without a search)"),
        Binding("home", "scroll_home", "Top", show=False),
        Binding("end", "scroll_end", "Bottom", show=False),
    ]

    follow: reactive[bool] = reactive(True)
    paused: reactive[bool] = reactive(False)
    wrap: reactive[bool] = reactive(False)
    search: reactive[str] = reactive("")

    class StateChanged(Message):
        """Follow, pause, wrap, search or the line counts changed: redraw the status."""

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, LogView.StateChanged)

    class SearchRequested(Message):
        pass

    def __init__(self, max_lines: int = 10_000, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.max_lines = max_lines
        self.entries: list[str] = []
        self.pending: list[str] = []
        self._rows: list[tuple[int, int, int]] = []  # (line, start, end) per display row
        self._rows_width = -1
        self._cache: LRUCache[tuple[int, int, int, str, int], Strip] = LRUCache(1024)
        self._matches: list[int] = []  # display rows with a match
        self._longest = 0
        self.current_match = -1

    # -- appending

    def write_lines(self, lines: Iterable[str]) -> None:
        """Append a batch. While paused, lines wait in `pending` (shown as a count)."""
        new = [line.rstrip("\n") for line in lines]
        if not new:
            return
        if self.paused:
            self.pending.extend(new)
            self.post_message(self.StateChanged())
            return
        self._append(new)

    def _append(self, new: list[str]) -> None:
        self.entries.extend(new)
        # Trim in steps of a tenth: trimming shifts every index, so everything is laid out again.
        if len(self.entries) > self.max_lines + self.max_lines // 10:
            del self.entries[: len(self.entries) - self.max_lines]
            self._rows_width = -1
        self._layout()
        if self.follow:
            # Deferred: the new virtual size must be laid out before "the end" is known.
            self.scroll_end(animate=False, x_axis=False)
        self.refresh()
        self.post_message(self.StateChanged())

    def clear(self) -> None:
        self.entries.clear()
        self.pending.clear()
        self._longest = 0
        self._rows_width = -1
        self._layout()
        self.refresh()

    # -- layout

    def _layout(self) -> None:
        width = max(1, self.scrollable_content_region.width)
        key = width if self.wrap else 0
        if key != self._rows_width:
            self._rows, self._rows_width = [], key
            self._matches = []
            self._cache.clear()
            self._longest = max((len(line) for line in self.entries), default=0)
            start_line = 0
        else:
            start_line = self._rows[-1][0] + 1 if self._rows else 0
        first_row = len(self._rows)
        for index in range(start_line, len(self.entries)):
            line = self.entries[index]
            self._longest = max(self._longest, len(line))
            if self.wrap and len(line) > width:
                for start in range(0, len(line), width):
                    self._rows.append((index, start, min(len(line), start + width)))
            else:
                self._rows.append((index, 0, len(line)))
        # Wrapped: exactly the visible width. Unwrapped: the longest line (scrolls sideways).
        self.virtual_size = Size(width if self.wrap else self._longest, len(self._rows))
        self._find_matches(first_row)

    def on_resize(self, event: events.Resize) -> None:
        if self.wrap:
            self._layout()
        if self.follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)

    def _find_matches(self, first_row: int = 0) -> None:
        """Search rows from first_row on (earlier rows were searched when they arrived)."""
        needle = self.search.lower()
        if not needle:
            self._matches = []
            return
        if first_row == 0:
            self._matches = []
        self._matches.extend(
            y for y in range(first_row, len(self._rows)) if needle in self._row_text(y).lower()
        )

    def _row_text(self, y: int) -> str:
        index, start, end = self._rows[y]
        return self.entries[index][start:end]

    # -- painting

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        row = scroll_y + y
        width = self.size.width
        base = self.rich_style
        if row >= len(self._rows):
            return Strip.blank(width, base)
        current = (
            self._matches[self.current_match]
            if 0 <= self.current_match < len(self._matches)
            else -1
        )
        index, start, end = self._rows[row]
        key = (index, start, end, self.search, int(row == current))
        strip = self._cache.get(key)
        if strip is None:
            strip = self._render_row(self.entries[index][start:end], start == 0, row == current)
            self._cache[key] = strip
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    def _render_row(self, text: str, first: bool, is_current: bool) -> Strip:
        base = self.rich_style
        match = base + self.get_component_rich_style("logview--match", partial=True)
        current = base + self.get_component_rich_style("logview--current", partial=True)
        time_style = base + self.get_component_rich_style("logview--time", partial=True)
        styles = [base] * len(text)
        stamp = _TIMESTAMP.match(text) if first else None
        if stamp:
            styles[: stamp.end()] = [time_style] * stamp.end()
        if self.search:
            hit = current if is_current else match
            for found in re.finditer(re.escape(self.search), text, re.IGNORECASE):
                styles[found.start() : found.end()] = [hit] * (found.end() - found.start())
        segments: list[Segment] = []
        run_start = 0
        for i in range(1, len(text) + 1):
            if i == len(text) or styles[i] != styles[run_start]:
                segments.append(Segment(text[run_start:i], styles[run_start]))
                run_start = i
        return Strip(segments)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._cache.clear()

    # -- state

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        # Scrolling up stops following; returning to the bottom resumes it.
        at_bottom = round(new_value) >= self.max_scroll_y
        if at_bottom != self.follow and not self.paused:
            self.follow = at_bottom

    def watch_follow(self, follow: bool) -> None:
        if follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.post_message(self.StateChanged())

    def watch_paused(self, paused: bool) -> None:
        if not paused and self.pending:
            pending, self.pending = self.pending, []
            self._append(pending)
        self.post_message(self.StateChanged())

    def watch_wrap(self, wrap: bool) -> None:
        self.styles.overflow_x = "hidden" if wrap else "auto"
        self._rows_width = -1
        self._layout()
        if self.follow:
            # Deferred: the new virtual size must be laid out before "the end" is known.
            self.scroll_end(animate=False, x_axis=False)
        self.refresh()
        self.post_message(self.StateChanged())

    def watch_search(self, search: str) -> None:
        self._cache.clear()
        self._find_matches()
        self.current_match = -1
        if self._matches:
            self._goto_match(len(self._matches) - 1)  # the newest match
        self.refresh()
        self.post_message(self.StateChanged())

    def _goto_match(self, n: int) -> None:
        if not self._matches:
            return
        self.current_match = n % len(self._matches)
        self.follow = False
        row = self._matches[self.current_match]
        self.scroll_to(y=max(0, row - self.size.height // 2), animate=False, immediate=True)
        self._cache.clear()
        self.refresh()
        self.post_message(self.StateChanged())

    def action_search(self) -> None:
        self.post_message(self.SearchRequested())

    def action_next_match(self) -> None:
        self._goto_match(self.current_match + 1)

    def action_previous_match(self) -> None:
        self._goto_match(self.current_match - 1)

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused

    def action_toggle_wrap(self) -> None:
        self.wrap = not self.wrap

    def copy_text(self) -> tuple[str, int]:
        """The lines that match the search (whole lines), or every kept line; and their count."""
        if self.search:
            indices = sorted({self._rows[y][0] for y in self._matches})
            lines = [self.entries[i] for i in indices]
        else:
            lines = list(self.entries)
        return "\n".join(lines), len(lines)

    def action_copy(self) -> None:
        text, count = self.copy_text()
        if not count:
            self.notify("Nothing to copy.", severity="warning")
            return
        # OSC 52: the terminal puts it on the system clipboard (most terminals, tmux with
        # set-clipboard on); it cannot tell us whether it did.
        self.app.copy_to_clipboard(text + "\n")
        what = "matching line" if self.search else "line"
        self.notify(f"Copied {count} {what}{'s' if count != 1 else ''} to the clipboard.")

    @property
    def match_count(self) -> int:
        return len(self._matches)

    def visible_text(self) -> list[str]:
        """What is on screen, for tests."""
        return [self.render_line(y).text.rstrip() for y in range(self.size.height)]


class LogPane(Vertical):
    """A LogView with its status line and a search box that appears on `/`."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close_search", show=False)]

    def __init__(self, title: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title = title

    def compose(self) -> ComposeResult:
        yield Input(
            placeholder="search (enter: find, n/N: next/previous, esc: clear)",
            id="log-search",
            classes="log-search",
        )
        yield LogView(id="log-view")
        yield Static(id="log-status", classes="log-status")

    @property
    def view(self) -> LogView:
        return self.query_one(LogView)

    def on_mount(self) -> None:
        self.query_one("#log-search", Input).display = False
        self._status()

    def write_lines(self, lines: Iterable[str]) -> None:
        self.view.write_lines(lines)

    @on(LogView.StateChanged)
    def _status(self) -> None:
        view = self.view
        flags = [
            ("follow", view.follow),
            ("wrap", view.wrap),
        ]
        parts = [Content.from_markup("[b]$t[/] $n lines", t=self.title, n=str(len(view.entries)))]
        for name, on_ in flags:
            parts.append(Content.from_markup("[b $success]$n[/]" if on_ else "[dim]$n[/]", n=name))
        if view.paused:
            parts.append(
                Content.from_markup("[b $warning]paused[/] ($n new)", n=str(len(view.pending)))
            )
        if view.search:
            where = f"{view.current_match + 1}/{view.match_count}" if view.match_count else "0"
            parts.append(Content.from_markup("search [b]$s[/] $w", s=view.search, w=where))
        parts.append(Content.from_markup("[dim]/ search · f follow · p pause · w wrap · y copy[/]"))
        self.query_one("#log-status", Static).update(Content("  ").join(parts), layout=False)

    @on(LogView.SearchRequested)
    def _open_search(self) -> None:
        box = self.query_one("#log-search", Input)
        box.display = True
        box.value = self.view.search
        box.focus()

    @on(Input.Changed, "#log-search")
    def _search_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.view.search = event.value

    @on(Input.Submitted, "#log-search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.view.focus()

    def action_close_search(self) -> None:
        box = self.query_one("#log-search", Input)
        if box.display:
            box.display = False
            box.value = ""
            self.view.search = ""
            self.view.follow = True
            self.view.focus()
