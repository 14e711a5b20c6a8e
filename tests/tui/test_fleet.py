"""A fleet in one dashboard, against fake engines: each host on its own workers, actions to the
host that owns the selection, one host switched to, and hosts that drop or hang."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from conftest import NO_STALL_S, SIZE, fake_app, loaded, wait_for
from textual.pilot import Pilot

from tui.app import GroveApp
from tui.engine.fake import FAKE_NOW, FakeEngine, fake_fleet
from tui.screens.dialogs import AskScreen, ChooseScreen
from tui.state import Link, join
from tui.widgets.bars import EngineHeader, HostBar
from tui.widgets.lineage_tree import LineageTree

WEB = "sb-1f3a9c20"


def fleet_app(
    hosts: dict[str, FakeEngine], meter_interval: float = 1.0, stall_s: float = NO_STALL_S
) -> GroveApp:
    """Quiet fakes send their history and then nothing: only the tests of hung hosts watch
    for stalls."""
    app = GroveApp(
        hosts,  # type: ignore[arg-type]
        now=lambda: FAKE_NOW,
        user_themes=False,
        meter_interval=meter_interval,
        stall_s=stall_s,
    )
    app.animation_level = "none"
    return app


def two_hosts(live: float | None = None) -> dict[str, FakeEngine]:
    return {
        "alpha": FakeEngine(live_interval=live, where="ssh://grove@alpha"),
        "beta": FakeEngine(live_interval=live, where="ssh://grove@beta"),
    }


async def test_two_hosts_each_with_its_tree_and_totals() -> None:
    app = fleet_app(two_hosts())
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot, sandboxes=12, events=1)
        tree = screen.query_one(LineageTree)
        hosts = [n for n in tree._by_id.values() if n.data and n.data.kind == "host"]
        assert [n.data.label for n in hosts if n.data] == ["alpha", "beta"]
        # The same sandbox id on two engines is two rows, each under its host.
        assert tree._by_id[join("beta", WEB)].parent is not None
        assert screen.metering_table.row_count == 12
        header = str(screen.query_one(EngineHeader).render())
        assert "2 hosts" in header and "alpha connected" in header
        bar = str(screen.query_one(HostBar).render())
        assert "fleet" in bar and "alpha" in bar and "beta" in bar
        fleet = screen.state.fleet()
        one = screen.state.hosts["alpha"].meters.host
        assert one is not None and fleet.host is not None and one.mem_cow is not None
        assert fleet.host.mem_cow == 2 * one.mem_cow


async def test_actions_go_to_the_host_of_the_selection() -> None:
    hosts = two_hosts()
    app = fleet_app(hosts)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot, sandboxes=12, events=1)
        screen.controller.select(join("beta", WEB))
        await pilot.press("F")
        await wait_for(pilot, lambda: isinstance(app.screen, AskScreen), what="fork dialog")
        await pilot.press("backspace", "2", "enter")
        await wait_for(pilot, lambda: len(screen.state.hosts["beta"].sandboxes) == 8,
                       what="two forks on beta")  # fmt: skip
        assert len(screen.state.hosts["alpha"].sandboxes) == 6
        assert len(hosts["alpha"].sandboxes) == 6


async def test_filter_across_hosts_and_switch_to_one() -> None:
    hosts = two_hosts()
    hosts["beta"].sandboxes[WEB] = replace(hosts["beta"].sandboxes[WEB], name="api")
    app = fleet_app(hosts)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot, sandboxes=12, events=1)
        await pilot.press("slash", *"api")
        await wait_for(pilot, lambda: screen.metering_table.row_count == 1, what="filtered")
        assert screen.state.rows(FAKE_NOW)[0].host == "beta"
        await pilot.press("escape")
        await wait_for(pilot, lambda: screen.metering_table.row_count == 12, what="unfiltered")
        await pilot.press("H")
        await wait_for(pilot, lambda: isinstance(app.screen, ChooseScreen), what="host choice")
        await pilot.press("down", "down", "enter")  # every host, alpha, beta
        await wait_for(pilot, lambda: screen.state.only_host == "beta", what="beta only")
        await wait_for(pilot, lambda: screen.metering_table.row_count == 6, what="beta's rows")
        assert "showing 1 of 2 hosts" in str(screen.query_one(EngineHeader).render())


async def _metering_ticks(pilot: Pilot[None], app: GroveApp, host: str, n: int) -> None:
    meters = app.state.hosts[host].meters
    start = meters.samples
    await wait_for(pilot, lambda: meters.samples >= start + n, timeout=10,
                   what=f"{n} samples from {host}")  # fmt: skip


async def test_a_hung_host_is_shown_and_never_holds_up_the_others() -> None:
    hosts = two_hosts(live=0.1)
    app = fleet_app(hosts, meter_interval=0.1, stall_s=1.0)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, sandboxes=12, events=1)
        await _metering_ticks(pilot, app, "alpha", 3)
        hosts["beta"].hang = True  # streams stay open and say nothing; calls never return
        loop = asyncio.get_running_loop()
        hung_at = loop.time()
        await wait_for(pilot, lambda: app.state.hosts["beta"].link is not Link.CONNECTED,
                       timeout=5, what="beta shown as not answering")  # fmt: skip
        assert loop.time() - hung_at < 5
        # Meanwhile alpha's metering goes on, and its rows keep their figures.
        await _metering_ticks(pilot, app, "alpha", 5)
        assert app.state.hosts["alpha"].connected
        assert len(app.state.hosts["beta"].sandboxes) == 6  # what beta had stays, marked
        hosts["beta"].hang = False
        app.screen.controller.reconnect()  # type: ignore[attr-defined]
        await wait_for(pilot, lambda: app.state.hosts["beta"].connected, timeout=10,
                       what="beta back")  # fmt: skip


async def test_a_dropped_host_reconnects_and_resumes_its_events() -> None:
    hosts = two_hosts(live=0.1)
    app = fleet_app(hosts, meter_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, sandboxes=12, events=1)
        beta = hosts["beta"]
        seen = app.state.events_total
        beta.drop()
        await wait_for(pilot, lambda: app.state.hosts["beta"].link is Link.RECONNECTING,
                       what="beta reconnecting")  # fmt: skip
        assert app.state.hosts["beta"].error is not None
        # Things happen while it is away; they arrive once it is back, once each.
        beta.restore()
        await beta.create_sandbox("debian:12", name="while-away")
        await wait_for(pilot, lambda: app.state.hosts["beta"].connected, timeout=10,
                       what="beta reconnected")  # fmt: skip
        await wait_for(pilot, lambda: any(s.name == "while-away"
                                          for s in app.state.hosts["beta"].sandboxes.values()),
                       what="the sandbox made while away")  # fmt: skip
        kinds = [e.event.kind for e in app.state.events if e.host == "beta"]
        assert kinds.count("created") == sum(1 for e in beta._events if e.kind == "created"), (
            "an event was lost or repeated across the reconnect"
        )
        assert app.state.events_total > seen


async def test_unreachable_host_does_not_delay_the_others() -> None:
    hosts = fake_fleet(2, live_interval=None, unreachable=1)
    app = fleet_app(hosts)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, sandboxes=12, events=1)
        down = app.state.hosts["down-1"]
        await wait_for(pilot, lambda: down.link is Link.UNREACHABLE, what="down-1 unreachable")
        assert down.error is not None and "refused" in down.error.message


async def test_single_host_keeps_its_single_host_layout() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        assert [c.key for c in screen.metering_table.columns_shown][:2] == ["name", "id"]
        assert "fleet" not in str(screen.query_one(HostBar).render())


async def test_q_quits_with_status_zero() -> None:
    """Even with a host whose connection hangs and one that refuses."""
    app = fleet_app(fake_fleet(2, live_interval=0.2, unreachable=1, hung=1))
    async with app.run_test(size=SIZE) as pilot:
        hosts = app.state.hosts
        await wait_for(pilot, lambda: len(hosts["host-1"].sandboxes) == 6
                       and len(hosts["host-2"].sandboxes) == 6, what="both answering")  # fmt: skip
        await wait_for(pilot, lambda: hosts["down-1"].link is Link.UNREACHABLE, what="down-1")
        assert hosts["hung-1"].link is Link.CONNECTING
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, what="the dashboard to quit")
    assert app.return_code == 0
