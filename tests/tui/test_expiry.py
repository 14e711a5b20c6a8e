"""The dashboard's expires column: there only while a sandbox has a TTL, the time left in the
theme's warning colour in the last minute, 'never' (not '-') for a sandbox without one."""

from __future__ import annotations

from dataclasses import replace

from conftest import SIZE, fake_app, key, loaded, wait_for

from tui import format as fmt
from tui.engine.fake import FAKE_NOW, FakeEngine
from tui.palette import Palette
from tui.state.rows import Row, sort_rows
from tui.widgets.metering_table import COLUMNS, EXPIRES, fit_columns, row_cells, with_expiry

FORK_1A = "sb-4d91a2b3"  # the fake's one sandbox with a TTL: 4m12s after FAKE_NOW


def test_expires_in_reads_and_warns_in_the_last_minute() -> None:
    assert fmt.expires_in(None, FAKE_NOW) == "never"
    assert fmt.expires_in(FAKE_NOW + 252, FAKE_NOW) == "4m12s"
    assert not fmt.expiring_soon(None, FAKE_NOW)
    assert not fmt.expiring_soon(FAKE_NOW + 61, FAKE_NOW)
    assert fmt.expiring_soon(FAKE_NOW + 60, FAKE_NOW) and fmt.expiring_soon(FAKE_NOW - 1, FAKE_NOW)


def test_cells_use_the_warning_colour_in_the_last_minute() -> None:
    palette = Palette({"warning": "#E0B354"})
    sandbox = FakeEngine().sandboxes[FORK_1A]
    columns = with_expiry(COLUMNS)
    at = [c.key for c in columns].index("expires")

    def cell(now: float) -> tuple[str, object]:
        text = row_cells(Row("local", sandbox, None), now, palette, columns)[at]
        return text.plain, text.style

    assert cell(FAKE_NOW) == ("4m12s", "")
    assert cell(sandbox.expires_at - 42) == ("42s", palette.style("warning"))  # type: ignore[operator]
    never = replace(sandbox, expires_at=None)
    assert row_cells(Row("local", never, None), FAKE_NOW, palette, columns)[at].plain == "never"


def test_the_column_takes_the_room_of_vmm_overhead_not_of_the_ids() -> None:
    columns = with_expiry(COLUMNS)
    keys = [c.key for c in columns]
    assert keys[keys.index("age") + 1] == "expires" and EXPIRES in columns
    shown = [c.key for c in fit_columns(columns, 104)]  # the snapshots' 140-column terminal
    assert "expires" in shown and "vmm" not in shown and "id" in shown
    assert "expires" not in [c.key for c in fit_columns(columns, 60)]


def test_sorting_by_expiry_puts_the_soonest_first_and_never_last() -> None:
    engine = FakeEngine()
    rows = [Row("local", s, None) for s in engine.sandboxes.values()]
    ordered = sort_rows(rows, "expires", False, FAKE_NOW)
    assert ordered[0].sandbox.id == FORK_1A
    assert sort_rows(rows, "expires", True, FAKE_NOW)[-1].sandbox.expires_at is None


async def test_the_table_shows_the_column_only_while_a_ttl_exists() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        table = screen.metering_table
        assert "expires" in [c.key for c in table.columns_shown]
        row = table.get_row(key(FORK_1A))
        assert any(cell.plain == "4m12s" for cell in row)
        # The TTL goes (the sandbox is terminated): so does the column, and VMM is back.
        await app.gateways["local"].terminate_sandbox(FORK_1A)  # type: ignore[attr-defined]
        await wait_for(pilot, lambda: "expires" not in [c.key for c in table.columns_shown],
                       what="the expires column to go")  # fmt: skip
        assert "vmm" in [c.key for c in table.columns_shown]
