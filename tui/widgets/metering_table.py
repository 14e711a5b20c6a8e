"""The metering table: one row per sandbox of every shown host, '-' where no datum.

While a shown sandbox has a TTL there is an expires column (the time left, in the theme's
warning colour in the last minute; 'never' for a sandbox without one); without any TTL the
table keeps its room for the metering columns.

It draws DashboardState.rows() (already filtered and in the chosen order) when the
metering, the inventory or the view moves; a click on a header asks for that sort.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable

from tui import format as fmt
from tui.palette import Palette
from tui.state import DashboardState, Row
from tui.widgets.redraws import Redraws


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int
    numeric: bool = False


# Explicit widths: columns fed live otherwise freeze at their first width, and snapshots drift.
COLUMNS = (
    Column("name", "name", 13),
    Column("id", "id", 11),
    Column("phase", "phase", 11),
    Column("unique_mem", "mem uniq", 9, True),
    Column("shared_mem", "mem shared", 10, True),
    Column("vmm", "VMM ovh", 9, True),
    Column("unique_disk", "disk uniq", 9, True),
    Column("cpu", "CPU", 6, True),
    Column("age", "age", 7, True),
    Column("network", "net", 9),
    Column("net_io", "net rx/tx", 9, True),
)
#: Time left before the reaper terminates it: only while some sandbox has a TTL.
EXPIRES = Column("expires", "expires", 7, True)
#: Left out, in this order, while the table is too narrow for every column. A TTL someone
#: set says more than the VMM overhead, which is much the same for every sandbox.
OPTIONAL = ("shared_mem", "age", "vmm", "expires", "unique_disk", "id")
#: Rows above and below the visible ones that are kept current too.
WINDOW_MARGIN = 5
HOST_COLUMN = Column("host", "host", 10)
#: A fleet's table: the host instead of the id (the filter still finds ids; the tree and the
#: usage panel name the selection).
FLEET_COLUMNS = (HOST_COLUMN, *(c for c in COLUMNS if c.key != "id"))


def with_expiry(columns: Sequence[Column]) -> tuple[Column, ...]:
    """columns with EXPIRES after the age column (or at the end)."""
    keys = [c.key for c in columns]
    at = keys.index("age") + 1 if "age" in keys else len(keys)
    return (*columns[:at], EXPIRES, *columns[at:])


def fit_columns(columns: Sequence[Column], width: int, padding: int = 1) -> tuple[Column, ...]:
    """The columns that fit in width (each takes its own and both paddings): the OPTIONAL ones
    are left out first to last until the rest fit, then any of them that fits again comes back
    (most useful first). A table too narrow even then scrolls."""

    def cost(keys: set[str]) -> int:
        return sum(c.width + 2 * padding for c in columns if c.key not in keys)

    left_out: list[str] = []
    for key in OPTIONAL:
        if cost(set(left_out)) <= width:
            break
        left_out.append(key)
    for key in reversed(left_out[:-1]):
        if cost(set(left_out) - {key}) <= width:
            left_out.remove(key)
    return tuple(c for c in columns if c.key not in left_out)


def row_cells(row: Row, now: float, palette: Palette, columns: Sequence[Column]) -> list[Text]:
    s, m = row.sandbox, row.meter
    text = {
        "host": row.host,
        "name": s.label,
        "id": fmt.short_id(s.id),
        "phase": f"{palette.icon(s.phase)} {s.phase}",
        "unique_mem": fmt.size(m.unique_mem if m else None),
        "shared_mem": fmt.size(m.shared_mem if m else None),
        "vmm": fmt.size(m.vmm_overhead if m else None),
        "unique_disk": fmt.size(m.unique_disk if m else None),
        "cpu": fmt.percent(m.cpu_percent if m else None),
        "age": fmt.age(s.created_at, now),
        "expires": fmt.expires_in(s.expires_at, now),
        "network": s.network or fmt.DASH,
        "net_io": fmt.pair(m.net_rx, m.net_tx) if m else fmt.DASH,
    }
    cells = []
    for column in columns:
        style: Style | str = palette.phase(s.phase) if column.key == "phase" else ""
        if column.key == "expires" and fmt.expiring_soon(s.expires_at, now):
            style = palette.style("warning")
        if row.stale:
            style = "dim"  # the last figures of a host that does not answer now
        cells.append(
            Text(
                text[column.key],
                style=style,
                justify="right" if column.numeric else "left",
                no_wrap=True,
                overflow="ellipsis",
            )
        )
    return cells


class MeteringTable(DataTable[Text], Redraws):
    """Updates cells in place when the row order is unchanged, so the cursor never jumps."""

    meters_rev: reactive[int] = reactive(0, init=False)
    tree_rev: reactive[int] = reactive(0, init=False)
    view_rev: reactive[int] = reactive(0, init=False)
    selection_rev: reactive[int] = reactive(0, init=False)

    @dataclass
    class SortRequested(Message):
        key: str

    def __init__(
        self, state: DashboardState, now: Callable[[], float], *, id: str | None = None
    ) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.state = state
        self.now = now
        self.palette = Palette({})
        # A fleet gets a host column; the hosts are known when the dashboard starts.
        self.all_columns = FLEET_COLUMNS if len(state.hosts) > 1 else COLUMNS
        #: Whether the expires column is in (some shown sandbox has a TTL).
        self._expiry = state.any_expiry()
        #: Those that fit the table's width (see fit_columns), chosen again on each resize.
        self.columns_shown = self._candidates()
        self._order: list[str] = []
        self._shown: dict[str, list[Text]] = {}
        self._latest: dict[str, Row] = {}
        #: Rows whose figures changed while they were off screen.
        self._stale: set[str] = set()
        self.rebuilding = False
        self._sorted_by: tuple[str, bool] = ("", False)
        # Cells by what they show: with hundreds of rows, most are unchanged every second.
        self._cells: dict[str, tuple[tuple[object, ...], list[Text]]] = {}

    def on_mount(self) -> None:
        self._add_columns()
        self.draw()

    def _add_columns(self) -> None:
        for column in self.columns_shown:
            self.add_column(self._header(column), key=column.key, width=column.width)

    def _candidates(self) -> tuple[Column, ...]:
        return with_expiry(self.all_columns) if self._expiry else tuple(self.all_columns)

    def _fit(self) -> bool:
        """Show the columns the width has room for; rows are drawn again when that changes
        (True: they were)."""
        width = self.scrollable_content_region.width
        candidates = self._candidates()
        shown = fit_columns(candidates, width, self.cell_padding) if width > 0 else candidates
        if shown == self.columns_shown:
            return False
        self.columns_shown = shown
        self.clear(columns=True)
        self._add_columns()
        self._order = []  # every row again, with the new set of cells
        self._cells.clear()
        self.draw()
        return True

    def watch_selection_rev(self) -> None:
        self.select_sandbox(self.state.selected)  # no redraw: the cursor follows

    def _header(self, column: Column) -> Text:
        label = column.label
        if column.key == self.state.sort_key:
            label += " ▼" if self.state.sort_reverse else " ▲"
        return Text(label, justify="right" if column.numeric else "left")

    def draw(self) -> None:
        if self.state.any_expiry() != self._expiry:
            self._expiry = not self._expiry
            if self._fit():
                return  # drawn with the new columns
        sorting = (self.state.sort_key, self.state.sort_reverse)
        if sorting != self._sorted_by and self.columns:
            self._sorted_by = sorting
            for column in self.columns_shown:
                self.columns[column.key].label = self._header(column)  # type: ignore[index]
            self.refresh()
        self.show(self.state.rows(self.now()))
        self.select_sandbox(self.state.selected)

    def show(self, rows: Sequence[Row]) -> None:
        """Cells change in place; only rows on screen (and a margin) are redrawn now, the rest
        when they scroll into view: a fleet has a thousand rows and shows thirty."""
        now = self.now()
        order = [r.key for r in rows]
        self._latest = {r.key: r for r in rows}
        if order == self._order:
            low, high = self._window()
            for index, key in enumerate(order):
                if low <= index < high:
                    self._redraw_row(key, now)
                else:
                    self._stale.add(key)
        else:
            selected = self.state.selected  # where the cursor goes back: the selection
            self.clear()
            self._shown = {}
            for key in order:
                cells = self._row_cells(self._latest[key], now)
                self.add_row(*cells, key=key)
                self._shown[key] = cells
            self._stale.clear()
            if selected in order:
                self.move_cursor(row=order.index(selected), animate=False, scroll=False)
            # The rebuild's own highlights (row 0 after the clear; the move above waits for a
            # layout) are echoes, not a choice: they end after the next refresh.
            self.rebuilding = True
            self.call_after_refresh(self._rebuilt)
        self._order = order
        for gone in self._cells.keys() - self._latest.keys():
            del self._cells[gone]
            self._shown.pop(gone, None)

    def _rebuilt(self) -> None:
        self.rebuilding = False
        self.select_sandbox(self.state.selected)

    def _window(self) -> tuple[int, int]:
        top = int(self.scroll_y)
        return max(0, top - WINDOW_MARGIN), top + self.size.height + WINDOW_MARGIN

    def _redraw_row(self, key: str, now: float) -> None:
        self._stale.discard(key)
        cells = self._row_cells(self._latest[key], now)
        old = self._shown.get(key, [])
        if cells is old:
            return  # the very cells already shown
        for column, new, previous in zip(self.columns_shown, cells, old, strict=False):
            # Text equality ignores the base style: a row going stale keeps its text.
            if new != previous or new.style != previous.style:
                self.update_cell(key, column.key, new)
        self._shown[key] = cells

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._redraw_stale()

    def on_resize(self) -> None:
        self._fit()
        self._redraw_stale()

    def _redraw_stale(self) -> None:
        if not self._stale:
            return
        now = self.now()
        low, high = self._window()
        for key in self._order[low:high]:
            if key in self._stale:
                self._redraw_row(key, now)

    def _row_cells(self, row: Row, now: float) -> list[Text]:
        s = row.sandbox
        key = (s, row.meter, row.stale, fmt.age(s.created_at, now),
               fmt.expires_in(s.expires_at, now), fmt.expiring_soon(s.expires_at, now),
               id(self.palette))  # fmt: skip
        cached = self._cells.get(row.key)
        if cached is not None and cached[0] == key:
            return cached[1]
        cells = row_cells(row, now, self.palette, self.columns_shown)
        self._cells[row.key] = (key, cells)
        return cells

    def restyle(self, palette: Palette) -> None:
        self.palette = palette
        self._order = []
        if self.is_mounted:
            self.draw()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        if event.column_key.value:
            self.post_message(self.SortRequested(event.column_key.value))

    @property
    def selected_sandbox(self) -> str | None:
        if not self.row_count or self.cursor_row < 0:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:
            return None
        return key.value

    def select_sandbox(self, key: str | None) -> None:
        if key is None or key not in self._order:
            return
        if self.selected_sandbox != key:
            self.move_cursor(row=self._order.index(key), animate=False)
