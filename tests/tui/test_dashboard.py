"""Pilot tests of the dashboard against FakeEngine: actions, selection, filter, logs, errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import SIZE, fake_app, key, loaded, wait_for
from textual.widgets import Input, Static

from engine.errors import GroveError
from tui.engine.fake import FakeEngine
from tui.local_shell import LocalShell
from tui.screens.dialogs import (
    AskScreen,
    ChooseScreen,
    ConfirmScreen,
    CreateScreen,
    FilesScreen,
    ServiceScreen,
)
from tui.screens.main import MainScreen
from tui.state import Link
from tui.state.keys import host_key
from tui.widgets.bars import EngineHeader, TransferLine
from tui.widgets.log_view import LogView
from tui.widgets.metering_table import MeteringTable
from tui.widgets.service_logs import ServiceLogPane
from tui.widgets.shells import ShellsPane
from tui.widgets.terminal import PtyTerminal
from tui.widgets.usage import UsagePanel

WEB = "sb-1f3a9c20"


def cell(table: MeteringTable, row: str, column: str) -> str:
    return str(table.get_cell(key(row), column))


def row_ids(table: MeteringTable) -> list[str]:
    return [str(k.value) for k in table.rows]


async def test_table_tree_and_dashes() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        table = screen.metering_table
        assert table.row_count == 6
        # A stopped sandbox has no memory datum: '-', never 0.
        assert cell(table, "sb-5e2c8f70", "unique_mem") == "-"
        assert cell(table, "sb-5e2c8f70", "unique_disk") == "212 MiB"
        assert cell(table, WEB, "cpu").endswith("%")
        # Forks nest under their parent, the orphan sits at the root.
        tree = screen.lineage_tree
        web = tree._by_id[key(WEB)]
        assert {c.data.id for c in web.children if c.data} == {key("sb-2b7e41d5"),
                                                                key("sb-3c0d5e6f")}  # fmt: skip
        assert tree._by_id[key("sb-4d91a2b3")].parent is tree._by_id[key("sb-2b7e41d5")]
        # The host is the top node; an orphan hangs from it, not from an environment.
        host = tree._by_id[host_key("local")]
        assert host.parent is tree.root and host.data is not None and host.data.kind == "host"
        assert tree._by_id[key("sb-6a4b1c9d")].parent is host
        assert tree._by_id[key("env:debian:12")].parent is host


async def test_selection_follows_between_tree_and_table() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        screen.metering_table.focus()
        screen.metering_table.select_sandbox(key("sb-4d91a2b3"))
        await pilot.pause()
        assert screen.state.selected == key("sb-4d91a2b3")
        assert screen.lineage_tree.selected_sandbox == key("sb-4d91a2b3")
        screen.lineage_tree.focus()
        await pilot.press("up")  # to web-fork-1
        await pilot.pause()
        assert screen.state.selected == key("sb-2b7e41d5")
        assert screen.metering_table.selected_sandbox == key("sb-2b7e41d5")


async def test_watched_change_keeps_cursor_selection_and_focus() -> None:
    engine = FakeEngine()
    app = fake_app(gateway=engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        table, tree = screen.metering_table, screen.lineage_tree
        paused = key("sb-3c0d5e6f")
        table.focus()
        table.select_sandbox(paused)
        await pilot.pause()
        assert screen.state.selected == paused
        # Something changes behind the user's back: the watch brings it, nobody asks.
        await engine.create_sandbox("debian:12", name="zz-new")
        await wait_for(pilot, lambda: table.row_count == 7, what="new row")
        assert key("sb-a0000001") in row_ids(table) and key("sb-a0000001") in tree._by_id
        assert table.selected_sandbox == paused
        assert tree.selected_sandbox == paused
        assert screen.state.selected == paused
        assert app.focused is table
        # A change that leaves the inventory's shape alone rebuilds nothing either.
        rows, nodes = list(table.rows.values()), dict(tree._by_id)
        seen = screen.state.events_total
        await engine.exec_capture(WEB, ["true"])
        await wait_for(pilot, lambda: screen.state.events_total == seen + 1, what="the event")
        await pilot.pause(0.1)
        assert all(a is b for a, b in zip(table.rows.values(), rows, strict=True))
        assert tree._by_id == nodes
        assert all(tree._by_id[k] is node for k, node in nodes.items())
        assert table.selected_sandbox == paused and tree.selected_sandbox == paused
        assert screen.state.selected == paused
        assert app.focused is table


async def test_sort_by_column_keeps_selection() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        table = screen.metering_table
        table.select_sandbox(key(WEB))
        await pilot.pause()
        no_datum = {key("sb-5e2c8f70"), key("sb-6a4b1c9d")}
        # A click on a header asks for its sort; the same header again reverses it.
        table.post_message(MeteringTable.SortRequested("cpu"))
        await wait_for(pilot, lambda: screen.state.sort_key == "cpu", what="sorted by cpu")
        await pilot.pause()
        order = row_ids(table)
        assert order[-3] == key("sb-4d91a2b3")  # the busiest, last of those with a datum
        assert set(order[-2:]) == no_datum  # no datum sorts last
        assert str(table.columns["cpu"].label).endswith("▲")  # type: ignore[index]
        table.post_message(MeteringTable.SortRequested("cpu"))
        await wait_for(pilot, lambda: screen.state.sort_reverse, what="reversed")
        await pilot.pause()
        order = row_ids(table)
        assert order[0] == key("sb-4d91a2b3")  # the busiest
        assert set(order[-2:]) == no_datum  # whichever the direction
        assert str(table.columns["cpu"].label).endswith("▼")  # type: ignore[index]
        assert table.selected_sandbox == key(WEB)
        assert screen.state.selected == key(WEB)


async def test_create_asks_for_environment_and_size_within_the_engines_limits() -> None:
    engine = FakeEngine()
    app = fake_app(gateway=engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, CreateScreen))
        dialog = app.screen
        assert isinstance(dialog, CreateScreen)
        assert dialog.query_one("#create-environment", Input).value == "debian:12"
        assert dialog.query_one("#create-mem", Input).value == "512"  # the engine's default
        # Beyond what the engine accepts: said in the dialog, nothing is sent.
        dialog.query_one("#create-mem", Input).value = "999999"
        await pilot.press("enter")
        await pilot.pause(0.05)
        assert isinstance(app.screen, CreateScreen)
        error = str(app.screen.query_one("#answer-error", Static).render())
        assert "Memory" in error, error
        assert not any(c.startswith("create") for c in engine.calls)
        dialog.query_one("#create-mem", Input).value = "256"
        dialog.query_one("#create-name", Input).value = "small"
        await pilot.press("enter")
        sandboxes = screen.state.hosts["local"].sandboxes
        await wait_for(pilot, lambda: len(sandboxes) == 7, what="created sandbox")
        assert "create debian:12" in engine.calls
        made = next(s for s in sandboxes.values() if s.name == "small")
        assert made.mem_mib == 256


async def test_terminate_needs_confirmation() -> None:
    engine = FakeEngine()
    app = fake_app(gateway=engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        screen.metering_table.select_sandbox(key("sb-4d91a2b3"))
        await pilot.pause()
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("enter")  # focus starts on Cancel
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        assert not any(c.startswith("terminate") for c in engine.calls)
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        sandboxes = screen.state.hosts["local"].sandboxes
        await wait_for(pilot, lambda: "sb-4d91a2b3" not in sandboxes, what="terminated")
        assert "terminate sb-4d91a2b3" in engine.calls
        await wait_for(
            pilot,
            lambda: key("sb-4d91a2b3") not in row_ids(screen.metering_table),
            what="its row to go",
        )
        assert key("sb-4d91a2b3") not in screen.lineage_tree._by_id


async def test_read_only_disables_mutations() -> None:
    engine = FakeEngine()
    app = fake_app(read_only=True, gateway=engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        await pilot.press("d", "c", "x", "F")
        await pilot.pause(0.1)
        assert isinstance(app.screen, MainScreen)
        assert screen.check_action("run", ("terminate",)) is None
        screen.run_action_by_name("stop")
        await pilot.pause(0.1)
        assert not [c for c in engine.calls if c.split()[0] in ("create", "stop", "terminate")]


async def test_not_supported_is_a_notification() -> None:
    app = fake_app(features=())  # the engine as it is today: no fork, shells or metering
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        assert "not available" in screen.state.metering_note()
        await pilot.press("o")
        await wait_for(pilot, lambda: bool(app._notifications), what="notification")
        note = list(app._notifications)[-1]
        assert note.title == "Not available yet" and note.severity == "warning"
        await pilot.press("F")
        await wait_for(pilot, lambda: isinstance(app.screen, AskScreen))
        await pilot.press("backspace", "2", "enter")
        await wait_for(pilot, lambda: any("snapshot-fork" in n.message for n in app._notifications))


async def test_engine_unreachable_shows_remedy() -> None:
    error = GroveError("engine_unreachable", "cannot reach the engine", "start it")
    app = fake_app(fail_connect=error)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: bool(app._notifications), what="notification")
        note = list(app._notifications)[-1]
        assert "start it" in note.message and note.severity == "error"
        screen = app.screen
        assert isinstance(screen, MainScreen)
        assert screen.state.hosts["local"].link is Link.UNREACHABLE
        header = str(screen.query_one(EngineHeader).render())
        assert "unreachable" in header and "cannot reach the engine" in header, header


async def test_filter_narrows_tree_and_table() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        await pilot.press("slash", *"fork-1")
        forks = {key("sb-2b7e41d5"), key("sb-4d91a2b3")}
        await wait_for(
            pilot, lambda: set(row_ids(screen.metering_table)) == forks, what="the filtered rows"
        )
        # The tree keeps ancestors for context: the host, the environment and web.
        assert set(screen.lineage_tree._by_id) == {
            host_key("local"),
            key("env:debian:12"),
            key(WEB),
            key("sb-2b7e41d5"),
            key("sb-4d91a2b3"),
        }
        await pilot.press("escape")
        await wait_for(pilot, lambda: screen.metering_table.row_count == 6, what="every row back")


async def test_log_search_follow_pause_wrap() -> None:
    engine = FakeEngine()
    app = fake_app(gateway=engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        view = screen.query_one(LogView)
        view.focus()
        await pilot.press("slash", *"forked", "enter")
        await wait_for(pilot, lambda: (view.search, view.match_count) == ("forked", 4),
                       what="four matches of 'forked'")  # fmt: skip
        assert not view.follow  # jumping to a match stops following
        await pilot.press("p")
        assert view.paused
        await engine.exec_capture(WEB, ["true"])
        await wait_for(pilot, lambda: len(view.pending) == 1, what="pending line")
        lines = len(view.entries)
        await pilot.press("p")
        assert len(view.entries) == lines + 1 and not view.pending
        await pilot.press("w")
        assert view.wrap
        await pilot.press("escape")  # closes the search and resumes following
        assert not view.search and view.follow
        await pilot.press("f")
        assert not view.follow
        await pilot.press("f")
        assert view.follow


async def test_shell_tab_with_fake_shell_and_local_pty() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        screen.metering_table.select_sandbox(key(WEB))
        await pilot.pause()
        await pilot.press("o")
        pane = screen.query_one(ShellsPane)
        await wait_for(pilot, lambda: len(pane.views) == 1, what="shell tab")
        term = pane.views[0].terminal
        assert app.focused is term
        await wait_for(pilot, lambda: any("root@web" in line for line in term.screen_lines()))
        await pilot.press(*"echo", "space", *"hi", "enter")
        await wait_for(pilot, lambda: "hi" in term.screen_lines(), what="echo output")
        # The same pane drives a real PTY: the seam a guest PTY will use.
        shell = await LocalShell(env={"PS1": "$ "}).start()
        view = await pane.open(shell, "local")
        await wait_for(
            pilot,
            lambda: any(line.startswith("$") for line in view.terminal.screen_lines()),
            what="prompt",
        )
        await pilot.press(*"echo", "space", *"from-pty", "enter")
        await wait_for(pilot, lambda: "from-pty" in view.terminal.screen_lines(), what="pty echo")
        cols, rows = view.terminal.vt.columns, view.terminal.vt.lines
        await pilot.press("ctrl+right_square_bracket")
        assert not isinstance(app.focused, PtyTerminal)
        await wait_for(pilot, lambda: (shell.cols, shell.rows) == (cols, rows),
                       what=f"the PTY to be {cols}x{rows}")  # fmt: skip


async def test_zoom_gives_logs_the_screen() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        bottom = screen.query_one("#bottom")
        before = bottom.size.height
        await pilot.press("z")
        await pilot.pause()
        assert bottom.size.height > before
        await pilot.press("z")
        await pilot.pause()
        assert bottom.size.height == before


async def test_service_start_opens_its_log_and_stop_asks_which() -> None:
    engine = FakeEngine()
    app = fake_app(gateway=engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        screen.metering_table.select_sandbox(key(WEB))
        await pilot.pause()
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, ServiceScreen), what="the form")
        await pilot.press(
            *"api", "enter", *"python3", "space", *"app.py", "enter", *"8080", "enter"
        )
        await wait_for(pilot, lambda: f"service start {WEB} api" in engine.calls, what="start")
        await wait_for(
            pilot,
            lambda: any(p.service == "api" for p in screen.query(ServiceLogPane)),
            what="the new service's log tab",
        )
        assert engine.services[(WEB, "api")].probe == "tcp:127.0.0.1:8080"
        log = next(p for p in screen.query(ServiceLogPane) if p.service == "api")
        await wait_for(pilot, lambda: any("started pid" in ln for ln in log.view.entries))
        engine.log(WEB, "api", "listening on 8080")
        await wait_for(
            pilot,
            lambda: any("listening on 8080" in ln for ln in log.view.entries),
            what="a new line followed",
        )
        # Two services now: stopping one asks which.
        await pilot.press("V")
        await wait_for(pilot, lambda: isinstance(app.screen, ChooseScreen), what="the choice")
        choice = app.screen
        assert isinstance(choice, ChooseScreen)
        names = [value for value, _ in choice.options]
        assert sorted(names) == ["api", "http"]
        await pilot.press(*["down"] * names.index("api"), "enter")
        await wait_for(pilot, lambda: f"service stop {WEB} api" in engine.calls, what="stop")
        panel = screen.query_one(UsagePanel)
        await wait_for(
            pilot,
            lambda: "○[/$grove-stopped] stopped ·" in str(panel.border_subtitle),
            what=f"the panel to show it stopped: {panel.border_subtitle!r}",
        )


async def test_service_form_reports_a_bad_probe_with_the_remedy() -> None:
    engine = FakeEngine()
    app = fake_app(gateway=engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        screen.metering_table.select_sandbox(key(WEB))
        await pilot.pause()
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, ServiceScreen))
        await pilot.press(*"x", "enter", *"true", "enter", *"nonsense", "enter")
        await wait_for(pilot, lambda: any(n.severity == "error" for n in app._notifications))
        note = next(n for n in app._notifications if n.severity == "error")
        assert "probe" in note.message and "→" in note.message
        assert not [c for c in engine.calls if c.startswith("service start")]


async def test_service_log_search_copy_and_wrap() -> None:
    app = fake_app()
    copied: list[str] = []
    app.copy_to_clipboard = copied.append  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        screen.metering_table.select_sandbox(key(WEB))
        await pilot.pause()
        await pilot.press("L")  # web has one service: its log opens at once
        await wait_for(pilot, lambda: bool(screen.query(ServiceLogPane)), what="log tab")
        log = screen.query_one(ServiceLogPane)
        await wait_for(pilot, lambda: len(log.view.entries) == 14, what="the tail")
        log.view.focus()
        await pilot.press("slash", *"404", "enter")
        await wait_for(pilot, lambda: log.view.match_count == 1, what="one match of '404'")
        await pilot.press("y")
        assert len(copied) == 1 and copied[0].count("\n") == 1 and '" 404 -' in copied[0]
        await pilot.press("escape", "y")
        assert copied[-1].count("\n") == 14
        await pilot.press("w")
        assert log.view.wrap
        await pilot.press("C")  # closes the log tab (the focused log hands C to the screen)
        await wait_for(pilot, lambda: not screen.query(ServiceLogPane), what="tab closed")


async def test_shell_tab_closes_and_attaches_again_with_scrollback() -> None:
    engine = FakeEngine()
    app = fake_app(gateway=engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        screen.metering_table.select_sandbox(key(WEB))
        await pilot.pause()
        await pilot.press("o")  # no shells yet: a new one, no question asked
        pane = screen.query_one(ShellsPane)
        await wait_for(pilot, lambda: len(pane.views) == 1, what="shell tab")
        await pilot.press(*"echo", "space", *"kept", "enter")
        await wait_for(pilot, lambda: "kept" in pane.views[0].terminal.screen_lines())
        await pilot.press("ctrl+right_square_bracket", "C")
        await wait_for(pilot, lambda: not pane.views, what="tab closed")
        assert engine.shells[WEB][0].state == "running"  # detached, not closed
        await pilot.press("o")
        await wait_for(pilot, lambda: isinstance(app.screen, ChooseScreen))
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: len(pane.views) == 1, what="attached tab")
        assert pane.views[0].shell_id == "sh-1"
        await wait_for(
            pilot,
            lambda: "kept" in pane.views[0].terminal.all_lines(),
            what="the scrollback replayed",
        )
        # Attaching to a shell already in a tab switches to that tab.
        await pilot.press("ctrl+right_square_bracket", "o")
        await wait_for(pilot, lambda: isinstance(app.screen, ChooseScreen))
        await pilot.press("down", "enter")
        await pilot.pause(0.2)
        assert len(pane.views) == 1


async def test_reset_asks_for_a_snapshot_and_empty_means_creation() -> None:
    engine = FakeEngine()
    app = fake_app(gateway=engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        screen.metering_table.select_sandbox(key("sb-2b7e41d5"))
        await pilot.pause()
        await pilot.press("R")
        await wait_for(pilot, lambda: isinstance(app.screen, AskScreen))
        await pilot.press("enter")
        await wait_for(pilot, lambda: "reset sb-2b7e41d5" in engine.calls, what="reset")
        await pilot.press("R")
        await wait_for(pilot, lambda: isinstance(app.screen, AskScreen))
        await pilot.press(*"clean", "enter")
        await wait_for(pilot, lambda: "reset sb-2b7e41d5 clean" in engine.calls)


async def test_history_seeds_the_sparklines() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        meters = screen.state.hosts["local"].meters
        fork = "sb-4d91a2b3"  # never selected yet: its history was not asked for
        assert fork not in meters.seeded
        # Forget what the stream brought, as if the dashboard had just opened.
        meters._mem.clear()
        meters._cpu.clear()
        screen.select("local", fork)
        await wait_for(pilot, lambda: len(meters.memory(fork)) == 60, what="seeded")
        assert fork in meters.seeded and len(meters.cpu(fork)) == 60


async def test_network_policy_action_changes_it_through_the_engine() -> None:
    engine = FakeEngine()
    app = fake_app(gateway=engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        table = screen.metering_table
        assert cell(table, WEB, "network") == "published"
        assert cell(table, "sb-5e2c8f70", "net_io") == "-"  # stopped: no datum
        assert "/" in cell(table, WEB, "net_io")
        table.select_sandbox(key(WEB))
        await pilot.pause()
        await pilot.press("N")
        await wait_for(pilot, lambda: isinstance(app.screen, ChooseScreen), what="the choice")
        choice = app.screen
        assert isinstance(choice, ChooseScreen)
        assert [value for value, _ in choice.options] == ["off", "published", "egress", "allow"]
        assert "now" in dict(choice.options)["published"]
        choice.dismiss("egress")
        await wait_for(pilot, lambda: cell(table, WEB, "network") == "egress", what="egress")
        assert f"network {WEB} egress" in engine.calls
        # allow=: asked for the list, checked by the engine's own parser before it is sent.
        await pilot.press("N")
        await wait_for(pilot, lambda: isinstance(app.screen, ChooseScreen), what="the choice")
        app.screen.dismiss("allow")
        await wait_for(pilot, lambda: isinstance(app.screen, AskScreen), what="the list")
        ask = app.screen
        assert isinstance(ask, AskScreen)
        ask.query_one(Input).value = "bad_host!"
        await pilot.press("enter")
        await pilot.pause(0.05)
        assert isinstance(app.screen, AskScreen)
        assert "neither a host name" in str(app.screen.query_one("#answer-error", Static).render())
        ask.query_one(Input).value = "example.org:443, 10.0.0.0/8"
        await pilot.press("enter")
        want = "allow=example.org:443,10.0.0.0/8"
        await wait_for(pilot, lambda: engine.sandboxes[WEB].network == want, what="allow=")
        await wait_for(pilot, lambda: screen.state.sandbox(key(WEB)).network == want)  # type: ignore[union-attr]
        assert cell(table, WEB, "network").startswith("allow=")
        assert want in str(screen.query_one(UsagePanel).border_subtitle)


async def test_network_policy_is_refused_in_read_only_mode() -> None:
    engine = FakeEngine()
    app = fake_app(read_only=True, gateway=engine)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("N")
        await pilot.pause(0.1)
        assert isinstance(app.screen, MainScreen)
        assert not [c for c in engine.calls if c.startswith("network")]


async def test_files_push_shows_progress_then_what_it_did(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "main.py").write_text("print('hi')\n")
    engine = FakeEngine()
    engine.transfer_gate = asyncio.Event()
    app = fake_app(gateway=engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        screen.metering_table.select_sandbox(key(WEB))
        await pilot.pause()
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, FilesScreen), what="the dialog")
        dialog = app.screen
        assert isinstance(dialog, FilesScreen)
        # A relative guest path is refused inline, and the dialog stays.
        await pilot.press(*str(tmp_path / "nothing"), "enter", *"root/x", "enter")
        error = str(dialog.query_one("#answer-error", Static).render())
        assert "absolute" in error and "No local file or directory" in error
        assert app.screen is dialog
        guest = dialog.query_one("#files-guest", Input)
        guest.value = ""  # empty again: it follows the local path
        local = dialog.query_one("#files-local", Input)
        local.value = str(project)
        await pilot.pause()
        assert guest.value == "/root/proj"
        guest.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: engine.transfers, what="the push")
        assert engine.transfers == [("push", WEB, str(project), "/root/proj")]
        line = screen.query_one(TransferLine)
        await wait_for(pilot, lambda: "42%" in str(line.render()), what="the progress")
        assert line.display
        assert f"push {project} → /root/proj  42%  12.0/28.5 MiB  9.1 MiB/s" in str(line.render())
        engine.transfer_gate.set()
        await wait_for(
            pilot,
            lambda: "pushed 3 files to /root/proj" in str(line.render()),
            what="the outcome",
        )
        assert "28.5 MiB in 3.1 s, 9.2 MiB/s" in str(line.render())
