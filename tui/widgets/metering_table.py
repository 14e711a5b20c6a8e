"""The metering table: one row per sandbox, sortable by any column, '-' where no datum."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from tui import format as fmt
from tui.models import SandboxInfo, SandboxMeter
from tui.palette import Palette


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
)
_BY_KEY = {c.key: c for c in COLUMNS}
TREE_ORDER = "tree"  # not a column: rows in the lineage tree's order


@dataclass(frozen=True)
class MeterRow:
    sandbox: SandboxInfo
    meter: SandboxMeter | None
    #: Place in the lineage tree (depth first): the default order, so rows line up with it.
    position: int = 0

    def value(self, key: str, now: float) -> Any:
        """The raw value a column sorts by; None sorts last."""
        s, m = self.sandbox, self.meter
        return {
            "tree": self.position,
            "name": s.label.lower(),
            "id": s.id,
            "phase": s.phase,
            "unique_mem": m.unique_mem if m else None,
            "shared_mem": m.shared_mem if m else None,
            "vmm": m.vmm_overhead if m else None,
            "unique_disk": m.unique_disk if m else None,
            "cpu": m.cpu_percent if m else None,
            "age": (now - s.created_at) if s.created_at > 0 else None,
        }[key]

    def cells(self, now: float, palette: Palette) -> list[Text]:
        s, m = self.sandbox, self.meter
        text = {
            "name": s.label,
            "id": fmt.short_id(s.id),
            "phase": f"{palette.icon(s.phase)} {s.phase}",
            "unique_mem": fmt.size(m.unique_mem if m else None),
            "shared_mem": fmt.size(m.shared_mem if m else None),
            "vmm": fmt.size(m.vmm_overhead if m else None),
            "unique_disk": fmt.size(m.unique_disk if m else None),
            "cpu": fmt.percent(m.cpu_percent if m else None),
            "age": fmt.age(s.created_at, now),
        }
        cells = []
        for column in COLUMNS:
            style = palette.phase(s.phase) if column.key == "phase" else ""
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


class MeteringTable(DataTable[Text]):
    """Updates cells in place when the row order is unchanged, so the cursor never jumps."""

    def __init__(self, now: Callable[[], float], *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.now = now
        self.sort_key = TREE_ORDER
        self.sort_reverse = False
        self.palette = Palette({})
        self._rows: list[MeterRow] = []
        self._order: list[str] = []
        self._shown: dict[str, list[Text]] = {}
        # Cells by what they show: with hundreds of rows, most are unchanged every second.
        self._cells: dict[str, tuple[tuple[object, ...], list[Text]]] = {}

    def on_mount(self) -> None:
        for column in COLUMNS:
            self.add_column(self._header(column), key=column.key, width=column.width)

    def _header(self, column: Column) -> Text:
        label = column.label
        if column.key == self.sort_key:
            label += " ▼" if self.sort_reverse else " ▲"
        return Text(label, justify="right" if column.numeric else "left")

    def show(self, rows: Sequence[MeterRow]) -> None:
        self._rows = list(rows)
        now = self.now()
        ordered = sorted(
            self._rows, key=lambda r: self._sort_value(r, now), reverse=self.sort_reverse
        )
        order = [r.sandbox.id for r in ordered]
        cells = {r.sandbox.id: self._row_cells(r, now) for r in ordered}
        if order == self._order:
            for key in order:
                old = self._shown.get(key, [])
                if cells[key] is old:
                    continue  # the very cells already shown
                for column, new, previous in zip(COLUMNS, cells[key], old, strict=False):
                    if new != previous:
                        self.update_cell(key, column.key, new)
        else:
            selected = self.selected_sandbox
            self.clear()
            for key in order:
                self.add_row(*cells[key], key=key)
            if selected in order:
                self.move_cursor(row=order.index(selected), animate=False, scroll=False)
        self._order = order
        self._shown = cells
        for gone in self._cells.keys() - cells.keys():
            del self._cells[gone]

    def _row_cells(self, row: MeterRow, now: float) -> list[Text]:
        key = (row.sandbox, row.meter, fmt.age(row.sandbox.created_at, now), id(self.palette))
        cached = self._cells.get(row.sandbox.id)
        if cached is not None and cached[0] == key:
            return cached[1]
        cells = row.cells(now, self.palette)
        self._cells[row.sandbox.id] = (key, cells)
        return cells

    def _sort_value(self, row: MeterRow, now: float) -> tuple[int, Any, str]:
        value = row.value(self.sort_key, now)
        missing = value is None
        # Missing data sorts last whichever the direction.
        return (
            int(missing) if not self.sort_reverse else -int(missing),
            value if not missing else 0,
            row.sandbox.label.lower(),
        )

    def sort_by(self, key: str, reverse: bool | None = None) -> None:
        if key not in _BY_KEY and key != TREE_ORDER:
            return
        if reverse is None:
            reverse = not self.sort_reverse if key == self.sort_key else False
        self.sort_key, self.sort_reverse = key, reverse
        for column in COLUMNS:
            self.columns[column.key].label = self._header(column)  # type: ignore[index]
        self._order = []
        self.show(self._rows)
        self.refresh()

    def cycle_sort(self) -> None:
        keys = [TREE_ORDER, *(c.key for c in COLUMNS)]
        self.sort_by(keys[(keys.index(self.sort_key) + 1) % len(keys)], reverse=False)

    def restyle(self, palette: Palette) -> None:
        self.palette = palette
        self._order = []
        self.show(self._rows)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        if event.column_key.value:
            self.sort_by(event.column_key.value)

    @property
    def selected_sandbox(self) -> str | None:
        if not self.row_count or self.cursor_row < 0:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:
            return None
        return key.value

    def select_sandbox(self, sandbox_id: str | None) -> None:
        if sandbox_id is None or sandbox_id not in self._order:
            return
        if self.selected_sandbox != sandbox_id:
            self.move_cursor(row=self._order.index(sandbox_id), animate=False)
