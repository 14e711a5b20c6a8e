"""The dashboard against the real engine, on one small family made with the CLI: a parent
running a `ticker` service, forked once. Two VMs for the whole module; the tests run in file
order: the first also takes a named snapshot from the dashboard, the last terminates the fork
from it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SIZE, key, wait_for
from textual.pilot import Pilot
from textual.widgets import Input
from textual.widgets.tree import TreeNode

from engine.client import AsyncGrove
from engine.config import Paths
from tui.app import GroveApp
from tui.engine.grpc_gateway import GrpcGateway
from tui.models import LineageNode
from tui.screens.dialogs import AskScreen, ChooseScreen, ConfirmScreen, FilesScreen, ServiceScreen
from tui.screens.main import MainScreen
from tui.state import HostState
from tui.widgets.bars import TransferLine
from tui.widgets.service_logs import ServiceLogPane
from tui.widgets.shells import ShellsPane

pytestmark = pytest.mark.vm

TICKER = "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.5; done"
SNAPSHOT = "tui-snap"


@dataclass
class Family:
    grove: object
    parent: str
    child: str


@pytest.fixture(scope="module")
def family(grove: object) -> Iterator[Family]:
    run = grove.ok  # type: ignore[attr-defined]
    parent = run("sandbox", "create", "debian:12", "--name", "tui-parent").out.strip()
    try:
        run("service", "start", parent, "ticker", "--", "sh", "-c", TICKER)
        forked = json.loads(run("sandbox", "fork", parent, "--name", "tui-kid", "--json").out)
        child = forked["children"][0]["id"]
        yield Family(grove, parent, child)
    finally:
        for name in ("tui-kid-1", "tui-parent"):
            grove.run("sandbox", "terminate", name)  # type: ignore[attr-defined]
        grove.run("snapshot", "rm", SNAPSHOT)  # type: ignore[attr-defined]  # if still there


@asynccontextmanager
async def dashboard(
    family: Family, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[GroveApp, Pilot[None], MainScreen]]:
    home = family.grove.home  # type: ignore[attr-defined]
    monkeypatch.setenv("GROVE_HOME", str(home))
    app = GroveApp(GrpcGateway(Paths(home), autostart=False), user_themes=False)
    app.animation_level = "none"
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), what="main screen")
        screen = app.screen
        assert isinstance(screen, MainScreen)
        await wait_for(
            pilot,
            lambda: {family.parent, family.child} <= set(local(screen).sandboxes),
            timeout=30,
            what="the family in the inventory",
        )
        yield app, pilot, screen
        errors = [n.message for n in app._notifications if n.severity == "error"]
        assert not errors, errors


def local(screen: MainScreen) -> HostState:
    """The one engine's part of the dashboard's state (a single gateway is host "local")."""
    return screen.state.hosts["local"]


async def select(pilot: Pilot[None], screen: MainScreen, sandbox_id: str) -> None:
    screen.metering_table.focus()
    screen.select("local", sandbox_id)
    await wait_for(pilot, lambda: screen.state.selected == key(sandbox_id), what="selection")


async def test_tree_shows_the_family_and_metering_moves(
    family: Family, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with dashboard(family, monkeypatch) as (app, pilot, screen):
        tree, table = screen.lineage_tree, screen.metering_table
        meters = local(screen).meters
        await wait_for(pilot, lambda: key(family.child) in tree._by_id, what="the fork in the tree")
        kid = tree._by_id[key(family.child)]
        parent = kid.parent
        assert parent is not None and parent.data is not None
        assert parent.data.id == key(family.parent)
        environment = parent.parent
        assert environment is not None and environment.data is not None
        assert environment.data.kind == "environment" and environment.data.label == "debian:12"
        host_node = environment.parent  # the engine's host heads its environments
        assert host_node is not None and host_node.data is not None
        assert host_node.data.kind == "host" and host_node.parent is tree.root
        assert str(table.get_cell(key(family.child), "name")) == "tui-kid-1"
        assert "running" in str(table.get_cell(key(family.parent), "phase"))

        # Metering is pushed by the engine: a row changes between two samples.
        await wait_for(pilot, lambda: meters.samples >= 1, timeout=20, what="a sample")
        columns = ("unique_mem", "cpu", "unique_disk", "net_io")  # never left out at this size

        def row() -> tuple[str, ...]:
            return tuple(str(table.get_cell(key(family.parent), c)) for c in columns)

        first, samples = row(), meters.samples
        assert first[0] != "-"  # a running sandbox has a memory datum
        await wait_for(
            pilot,
            lambda: meters.samples > samples and row() != first,
            timeout=30,
            what="a metering value to change",
        )
        host = meters.host
        assert host is not None and host.mem_cow and host.mem_naive

        # The sparklines have a past from the engine's history, not just from this session.
        await select(pilot, screen, family.parent)
        await wait_for(
            pilot,
            lambda: len(meters.memory(family.parent)) > meters.samples,
            timeout=10,
            what="history seeded",
        )

        # A named snapshot taken here appears in the tree under its sandbox.
        await pilot.press("P")
        await wait_for(pilot, lambda: isinstance(app.screen, AskScreen), what="the name")
        app.screen.query_one(Input).value = SNAPSHOT
        await pilot.press("enter")

        def snapshot() -> TreeNode[LineageNode] | None:
            return next(
                (
                    n
                    for n in tree._by_id.values()
                    if n.data is not None and n.data.kind == "snapshot" and n.data.label == SNAPSHOT
                ),
                None,
            )

        await wait_for(pilot, lambda: snapshot() is not None, timeout=60, what="the snapshot")
        node = snapshot()
        assert node is not None and node.parent is tree._by_id[key(family.parent)]


async def test_shell_typed_into_and_attached_again(
    family: Family, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with dashboard(family, monkeypatch) as (app, pilot, screen):
        await select(pilot, screen, family.parent)
        await pilot.press("o")
        pane = screen.query_one(ShellsPane)
        await wait_for(pilot, lambda: bool(pane.views), timeout=30, what="a shell tab")
        view = pane.views[0]
        term = view.terminal
        assert view.shell_id
        await wait_for(
            pilot,
            lambda: any(ln.rstrip().endswith(("#", "$")) for ln in term.screen_lines()),
            timeout=30,
        )
        await pilot.press(*"echo", "space", *"guest-ok", "enter")
        await wait_for(pilot, lambda: "guest-ok" in term.screen_lines(), timeout=20)
        await pilot.press(*"stty", "space", *"size", "enter")
        size = f"{term.vt.lines} {term.vt.columns}"
        await wait_for(
            pilot, lambda: size in term.screen_lines(), timeout=20, what=f"stty size {size}"
        )

        # Leave the terminal, close the tab (the shell keeps running), then attach again:
        # the scrollback comes back.
        await pilot.press("ctrl+right_square_bracket", "C")
        await wait_for(pilot, lambda: not pane.views, what="the tab to close")
        await pilot.press("o")
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, ChooseScreen),
            timeout=20,
            what="the new-or-attach choice",
        )
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: bool(pane.views), timeout=30, what="the attached tab")
        again = pane.views[0]
        assert again.shell_id == view.shell_id
        await wait_for(
            pilot,
            lambda: "guest-ok" in again.terminal.all_lines(),
            timeout=20,
            what="the scrollback replayed",
        )


async def test_service_log_follows_and_errors_carry_the_remedy(
    family: Family, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with dashboard(family, monkeypatch) as (app, pilot, screen):
        await select(pilot, screen, family.parent)
        await wait_for(
            pilot,
            lambda: [s.name for s in local(screen).services.get(family.parent, [])] == ["ticker"],
            timeout=10,
            what="the service listed",
        )
        await pilot.press("L")
        await wait_for(pilot, lambda: bool(screen.query(ServiceLogPane)), what="the log tab")
        log = screen.query_one(ServiceLogPane)
        ticks = lambda: [ln for ln in log.view.entries if " tick " in ln]  # noqa: E731
        await wait_for(pilot, lambda: len(ticks()) >= 2, timeout=20, what="ticks")
        seen = len(ticks())
        await wait_for(
            pilot, lambda: len(ticks()) >= seen + 2, timeout=20, what="new lines while following"
        )
        assert log.view.follow

        # The engine refuses a second service of the same name: a notification with the remedy.
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, ServiceScreen), what="the form")
        form = app.screen
        form.query_one("#service-name", Input).value = "ticker"
        form.query_one("#service-command", Input).value = "sleep 60"
        await pilot.click("#ok")
        await wait_for(
            pilot,
            lambda: any(n.severity == "error" for n in app._notifications),
            timeout=20,
            what="the refusal",
        )
        note = next(n for n in app._notifications if n.severity == "error")
        assert "→" in note.message  # the remedy
        app._notifications.clear()


async def test_files_push_lands_in_the_guest(
    family: Family, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    project = tmp_path / "tui-push"
    (project / "sub").mkdir(parents=True)
    (project / "a.txt").write_text("alpha\n")
    (project / "sub" / "b.txt").write_text("beta\n")
    async with dashboard(family, monkeypatch) as (app, pilot, screen):
        await select(pilot, screen, family.parent)
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, FilesScreen), what="the dialog")
        dialog = app.screen
        dialog.query_one("#files-local", Input).value = str(project)
        await pilot.pause()
        assert dialog.query_one("#files-guest", Input).value == "/root/tui-push"
        await pilot.click("#ok")
        line = screen.query_one(TransferLine)
        await wait_for(
            pilot,
            lambda: "pushed 2 files to /root/tui-push" in str(line.render()),
            timeout=60,
            what="the push to finish",
        )
    client = await AsyncGrove.connect(Paths(family.grove.home), autostart=False)  # type: ignore[attr-defined]
    try:
        entries = await client.file_list(family.parent, "/root/tui-push", recursive=True)
    finally:
        await client.close()
    names = {e.path.rstrip("/").rsplit("/", 1)[-1] for e in entries}
    assert {"a.txt", "sub", "b.txt"} <= names


async def test_terminate_with_confirmation_removes_the_node(
    family: Family, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with dashboard(family, monkeypatch) as (app, pilot, screen):
        tree, table = screen.lineage_tree, screen.metering_table
        await select(pilot, screen, family.child)
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        await pilot.press("y")
        await wait_for(
            pilot,
            lambda: family.child not in local(screen).sandboxes,
            timeout=60,
            what="the fork to go",
        )
        await wait_for(
            pilot,
            lambda: key(family.child) not in [str(k.value) for k in table.rows],
            what="its row to go",
        )
        assert key(family.child) not in tree._by_id
        assert key(family.parent) in tree._by_id
    listed = json.loads(family.grove.ok("ps", "--json").out)  # type: ignore[attr-defined]
    assert family.child not in [s["id"] for s in listed]
