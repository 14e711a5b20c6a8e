"""DashboardState on its own: transitions as engine messages arrive, with no Textual app."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.errors import GroveError
from tui.models import (
    EngineInfo,
    EnvironmentInfo,
    EventInfo,
    HostTotals,
    InventoryChange,
    LineageNode,
    MeterSample,
    SandboxInfo,
    SandboxMeter,
)
from tui.state import DashboardState, Link, Revision, join

ENV = EnvironmentInfo("debian:12", cached=True, template_ready=True)
INFO = EngineInfo(1, "kvm", "", "/home", "0.1", 0.0, 0)
MiB = 1 << 20


def box(sid: str, name: str, parent: str = "", phase: str = "running") -> SandboxInfo:
    return SandboxInfo(sid, name, "debian:12", phase, parent_id=parent, created_at=100.0)


def lineage(*sandboxes: SandboxInfo) -> tuple[LineageNode, ...]:
    nodes = [LineageNode("env:debian:12", "environment", "debian:12")]
    for s in sandboxes:
        nodes.append(LineageNode(s.id, "sandbox", s.label, s.parent_id or "env:debian:12"))
    return tuple(nodes)


def event(seq: int, sid: str, kind: str) -> EventInfo:
    return EventInfo(seq, sid, 1000.0 + seq, kind)


def full(*sandboxes: SandboxInfo, cursor: int = 0) -> InventoryChange:
    return InventoryChange(cursor, True, sandboxes, (), (), (ENV,), lineage(*sandboxes))


def connected_state(*hosts: str) -> DashboardState:
    state = DashboardState()
    for name in hosts:
        state.add_host(name, f"ssh://{name}")
        state.connected(name, INFO)
    state.take_changes()
    return state


def test_hosts_come_and_go() -> None:
    state = DashboardState()
    state.add_host("a")
    state.add_host("b")
    assert list(state.hosts) == ["a", "b"]
    assert state.hosts["a"].link is Link.CONNECTING
    assert state.take_changes() & Revision.HOSTS
    state.connected("a", INFO)
    assert state.hosts["a"].connected
    state.apply("a", full(box("sb-1", "web")))
    state.select(join("a", "sb-1"))
    state.focus_host("a")
    state.remove_host("a")
    assert list(state.hosts) == ["b"]
    assert state.selected is None and state.only_host is None
    assert [n.kind for n in state.tree()] == ["host"]


def test_a_host_that_drops_keeps_its_sandboxes_marked() -> None:
    state = connected_state("a", "b")
    state.apply("a", full(box("sb-1", "web")))
    state.lost("a", GroveError("engine_unreachable", "gone", "retry"), reachable_before=True)
    host = state.hosts["a"]
    assert host.link is Link.RECONNECTING and host.error is not None
    assert "sb-1" in host.sandboxes  # what it had stays on screen
    assert state.tree()[0].host is not None and state.tree()[0].host.link == "reconnecting"
    state.connecting("a")  # a retry starts: it still says reconnecting, and why
    assert host.link is Link.RECONNECTING and host.error is not None
    # Lost for longer than a reconnect should take: unreachable.
    state.lost("a", GroveError("engine_unreachable", "gone", "retry"), reachable_before=False)
    assert host.link is Link.UNREACHABLE
    never = DashboardState()
    never.add_host("c")
    never.lost("c", GroveError("host_unreachable", "refused", "check sshd"), False)
    assert never.hosts["c"].link is Link.UNREACHABLE


def test_sandbox_appears_forks_and_terminates() -> None:
    state = connected_state("a")
    web = box("sb-1", "web")
    state.apply("a", full(web, cursor=2))
    assert [n.label for n in state.tree()] == ["a", "debian:12", "web"]
    # A fork: the child's events, the child, and the lineage that now has it.
    child = box("sb-2", "web-fork-1", parent="sb-1")
    fresh = state.apply(
        "a",
        InventoryChange(3, False, (child,), (), (event(3, "sb-2", "forked"),), None,
                        lineage(web, child)),
    )  # fmt: skip
    assert [e.kind for e in fresh] == ["forked"]
    tree = {n.id: n for n in state.tree()}
    assert tree[join("a", "sb-2")].parent_id == join("a", "sb-1")
    assert tree[join("a", "sb-2")].sandbox == child
    # Terminated: out of the table and the tree (the lineage re-sent without it).
    state.select(join("a", "sb-1"))
    state.apply(
        "a",
        InventoryChange(4, False, (), ("sb-1",), (event(4, "sb-1", "terminated"),), None,
                        lineage(child)),
    )  # fmt: skip
    assert "sb-1" not in state.hosts["a"].sandboxes
    assert state.selected is None  # the selection went with it
    assert [r.sandbox.id for r in state.rows(0)] == ["sb-2"]
    # An orphan hangs from its host, not from nowhere.
    assert {n.id: n for n in state.tree()}[join("a", "sb-2")].parent_id == join("a", "")


def test_resumed_watch_logs_no_event_twice() -> None:
    state = connected_state("a")
    state.apply("a", InventoryChange(2, True, (box("sb-1", "web"),), (),
                                     (event(1, "sb-1", "created"), event(2, "sb-1", "running")),
                                     (ENV,), lineage(box("sb-1", "web"))))  # fmt: skip
    assert state.events_total == 2
    # After a reconnect the engine sends everything again, and the events after the cursor.
    again = InventoryChange(3, True, (box("sb-1", "web"),), (),
                            (event(2, "sb-1", "running"), event(3, "sb-1", "exec")),
                            (ENV,), lineage(box("sb-1", "web")))  # fmt: skip
    state.apply("a", again)
    assert [e.event.seq for e in state.events] == [1, 2, 3]
    assert state.hosts["a"].cursor == 3


def test_same_ids_on_two_hosts_stay_apart() -> None:
    state = connected_state("a", "b")
    state.apply("a", full(box("sb-1", "web")))
    state.apply("b", full(box("sb-1", "db")))
    rows = state.rows(0)
    assert [(r.host, r.sandbox.label) for r in rows] == [("a", "web"), ("b", "db")]
    assert len({n.id for n in state.tree()}) == len(state.tree())
    assert state.sandbox(join("b", "sb-1")) is not None
    assert state.sandbox(join("b", "sb-1")).label == "db"  # type: ignore[union-attr]


def test_filter_matches_across_hosts_and_keeps_ancestors() -> None:
    state = connected_state("alpha", "beta")
    web, child = box("sb-1", "web"), box("sb-2", "web-fork-1", parent="sb-1")
    state.apply("alpha", full(web, child))
    state.apply("beta", full(box("sb-9", "db")))
    state.set_filter("fork")
    assert [n.label for n in state.tree()] == ["alpha", "debian:12", "web", "web-fork-1"]
    assert [r.sandbox.label for r in state.rows(0)] == ["web-fork-1"]
    state.set_filter("beta")  # a host's name matches every sandbox on it
    assert [(r.host, r.sandbox.label) for r in state.rows(0)] == [("beta", "db")]
    state.set_filter("")
    assert len(state.rows(0)) == 3


def test_sort_and_host_focus() -> None:
    state = connected_state("a", "b")
    state.apply("a", full(box("sb-1", "web"), box("sb-2", "api")))
    state.apply("b", full(box("sb-3", "db")))
    for name, cpu in (("a", {"sb-1": 5.0, "sb-2": 50.0}), ("b", {"sb-3": 20.0})):
        meters = tuple(SandboxMeter(i, unique_mem=MiB, cpu_percent=c) for i, c in cpu.items())
        state.sample(name, MeterSample(1.0, meters, HostTotals(mem_cow=10 * MiB)))
    state.sort_by("cpu", reverse=True)
    assert [r.sandbox.label for r in state.rows(0)] == ["api", "db", "web"]
    state.sort_by("cpu")  # the same column again: the other way
    assert not state.sort_reverse
    with pytest.raises(ValueError):
        state.sort_by("nonsense")
    state.sort_by("net_io")  # no traffic datum anywhere: the order by name, none made up
    assert [r.sandbox.label for r in state.rows(0)] == ["api", "db", "web"]
    state.focus_host("b")
    assert [r.sandbox.label for r in state.rows(0)] == ["db"]
    assert [n.label for n in state.tree() if n.kind == "host"] == ["b"]
    with pytest.raises(KeyError):
        state.focus_host("zz")
    state.focus_host(None)
    assert len(state.rows(0)) == 3


def test_fleet_totals_sum_answering_hosts_only() -> None:
    state = connected_state("a", "b", "c")
    state.sample("a", MeterSample(1.0, (), HostTotals(mem_naive=300, mem_cow=200, cpu_count=2,
                                                      cpu_percent=50.0)))  # fmt: skip
    state.sample("b", MeterSample(1.0, (), HostTotals(mem_naive=100, mem_cow=60, cpu_count=6,
                                                      cpu_percent=10.0)))  # fmt: skip
    state.sample("c", MeterSample(1.0, (), HostTotals(mem_naive=999, mem_cow=999)))
    state.lost("c", GroveError("engine_unreachable", "gone", ""), reachable_before=True)
    fleet = state.fleet()
    assert fleet.hosts == 3 and fleet.connected == 2
    assert fleet.host is not None
    assert (fleet.host.mem_naive, fleet.host.mem_cow) == (400, 260)
    assert fleet.host.cpu_count == 8
    assert fleet.host.cpu_percent == pytest.approx((2 * 50 + 6 * 10) / 8)
    # A figure no host has stays no datum, not 0.
    assert fleet.host.disk_cow is None


def test_changes_say_what_moved() -> None:
    state = connected_state("a")
    state.apply("a", full(box("sb-1", "web")))
    state.take_changes()
    state.sample("a", MeterSample(1.0, (SandboxMeter("sb-1", unique_mem=MiB),)))
    changed = state.take_changes()
    assert changed & Revision.METERS and not changed & Revision.SELECTION
    assert state.select(join("a", "sb-1"))
    assert state.take_changes() & Revision.SELECTION
    assert not state.select(join("a", "sb-404"))  # no such sandbox: nothing changes
    assert state.take_changes() is Revision.NONE


def test_sort_by_network_policy_and_traffic() -> None:
    state = connected_state("a")
    state.apply("a", full(
        replace(box("sb-1", "web"), network="published"),
        replace(box("sb-2", "api"), network="egress"),
        box("sb-3", "old", phase="stopped"),  # an engine that names no policy
    ))  # fmt: skip
    meters = (
        SandboxMeter("sb-1", net_rx=10, net_tx=5),
        SandboxMeter("sb-2", net_rx=0, net_tx=100),
        SandboxMeter("sb-3"),  # stopped: no datum
    )
    state.sample("a", MeterSample(1.0, meters, HostTotals()))
    state.sort_by("network")
    assert [r.sandbox.label for r in state.rows(0)] == ["api", "web", "old"]
    state.sort_by("net_io", reverse=True)
    assert [r.sandbox.label for r in state.rows(0)] == ["api", "web", "old"]  # 100, 15, none
    state.sort_by("net_io")
    assert [r.sandbox.label for r in state.rows(0)] == ["web", "api", "old"]
