"""DashboardState: every host's inventory and metering, the selection, the filter and the sort.

Plain data and pure transitions: the controller calls these as engine messages arrive, and
bumps nothing else; widgets read the views (`tree`, `rows`, `fleet`) when a revision they
render has moved. No Textual, no engine calls: tests drive it directly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Flag, auto

from engine.errors import GroveError
from tui.models import (
    EngineInfo,
    EventInfo,
    HostTotals,
    InventoryChange,
    LineageNode,
    MeterSample,
    SandboxInfo,
    SandboxMeter,
    ServiceInfo,
    TransferProgress,
    TransferResult,
)
from tui.state.host import HostState, Link
from tui.state.keys import SandboxKey, host_key, join, split
from tui.state.rows import SORT_KEYS, TREE_ORDER, Row, sort_rows
from tui.state.transfer import Transfer

EVENT_LOG = 2000


class Revision(Flag):
    """What a transition changed, so each widget redraws only for its own part."""

    NONE = 0
    HOSTS = auto()  # connection states, engine info
    TREE = auto()  # the inventory: sandboxes, lineage, environments
    METERS = auto()  # metering figures
    SELECTION = auto()
    VIEW = auto()  # filter, sort, host focus
    EVENTS = auto()
    SERVICES = auto()
    TRANSFER = auto()  # the file transfer on the status line


@dataclass(frozen=True)
class FleetTotals:
    """The host bar: totals of every shown host that answers, naive against CoW-aware."""

    hosts: int
    connected: int
    sandboxes: int
    running: int
    host: HostTotals | None  # None until a shown host has sent metering


@dataclass(frozen=True)
class LoggedEvent:
    host: str
    event: EventInfo
    label: str


class DashboardState:
    def __init__(self) -> None:
        self.hosts: dict[str, HostState] = {}
        self.selected: SandboxKey | None = None
        self.filter_text = ""
        self.sort_key = TREE_ORDER
        self.sort_reverse = False
        #: Show this host only (None: every host).
        self.only_host: str | None = None
        self.events: deque[LoggedEvent] = deque(maxlen=EVENT_LOG)
        #: Events ever logged: a view that has shown n of them writes the ones after.
        self.events_total = 0
        #: The file transfer under way, or the last one's outcome until it is cleared.
        self.transfer: Transfer | None = None
        self.changed = Revision.NONE
        self._tree: list[LineageNode] | None = None
        #: Each host's lineage with fleet-wide ids, kept until its inventory changes (metering
        #: changes the host's own row every second, not its thousand sandboxes).
        self._host_nodes: dict[str, list[LineageNode]] = {}

    def _mark(self, what: Revision) -> None:
        self.changed |= what
        if what & (Revision.TREE | Revision.VIEW | Revision.HOSTS | Revision.METERS):
            # The host rows carry their memory; each host's own nodes are cached apart.
            self._tree = None

    def take_changes(self) -> Revision:
        """What changed since the last call (the controller hands it to the screen)."""
        changed, self.changed = self.changed, Revision.NONE
        return changed

    # hosts and their connections

    def add_host(self, name: str, where: str = "") -> HostState:
        host = self.hosts.get(name)
        if host is None:
            host = self.hosts[name] = HostState(name, where or name)
            self._mark(Revision.HOSTS | Revision.TREE)
        return host

    def remove_host(self, name: str) -> None:
        self._host_nodes.pop(name, None)
        if self.hosts.pop(name, None) is not None:
            if self.only_host == name:
                self.only_host = None
            if self.selected is not None and split(self.selected)[0] == name:
                self.selected = None
                self._mark(Revision.SELECTION)
            self._mark(Revision.HOSTS | Revision.TREE | Revision.METERS)

    def connecting(self, name: str) -> None:
        """An attempt starts. A host already reconnecting or unreachable keeps saying so (and
        its last error) until the attempt ends either way."""
        host = self.hosts[name]
        if host.link is Link.CONNECTED:
            host.link = Link.CONNECTING
            self._mark(Revision.HOSTS | Revision.TREE)

    def connected(self, name: str, info: EngineInfo, where: str = "") -> None:
        host = self.hosts[name]
        host.link, host.info, host.error = Link.CONNECTED, info, None
        if where:
            host.where = where
        self._mark(Revision.HOSTS | Revision.TREE)

    def lost(self, name: str, error: GroveError, reachable_before: bool) -> None:
        """The host stopped answering (or never did). What it had stays on screen, marked."""
        host = self.hosts[name]
        host.link = Link.RECONNECTING if reachable_before else Link.UNREACHABLE
        host.error = error
        self._mark(Revision.HOSTS | Revision.TREE | Revision.METERS)

    # engine messages

    def apply(self, name: str, change: InventoryChange) -> list[EventInfo]:
        host = self.hosts[name]
        fresh = host.apply(change)
        self._host_nodes.pop(name, None)
        self._mark(Revision.TREE | Revision.HOSTS)
        if self.selected is not None and self.sandbox(self.selected) is None:
            self.selected = None
            self._mark(Revision.SELECTION)
        self.log_events(name, fresh)
        return fresh

    def log_events(self, name: str, events: Iterable[EventInfo]) -> None:
        host = self.hosts[name]
        for event in sorted(events, key=lambda e: (e.ts, e.seq)):
            sandbox = host.sandboxes.get(event.sandbox_id)
            label = sandbox.label if sandbox else event.sandbox_id
            self.events.append(LoggedEvent(name, event, label))
            self.events_total += 1
            self._mark(Revision.EVENTS)

    def sample(self, name: str, sample: MeterSample) -> None:
        host = self.hosts[name]
        host.meters.add(sample)
        host.metering_note = ""
        self._mark(Revision.METERS)

    def metering_unavailable(self, name: str, note: str) -> None:
        self.hosts[name].metering_note = note
        self._mark(Revision.METERS)

    def history(self, name: str, sandbox_id: str, samples: list[SandboxMeter]) -> None:
        if name in self.hosts and self.hosts[name].meters.seed(sandbox_id, samples):
            self._mark(Revision.METERS)

    def services_loaded(self, name: str, sandbox_id: str, services: list[ServiceInfo]) -> None:
        if name in self.hosts:
            self.hosts[name].services[sandbox_id] = services
            self._mark(Revision.SERVICES)

    # the file transfer

    def transfer_started(self, direction: str, sandbox: str, source: str, dest: str) -> bool:
        """A new push or pull; False while another one still runs (one at a time)."""
        if self.transfer is not None and self.transfer.running:
            return False
        self.transfer = Transfer(direction, sandbox, source, dest)
        self._mark(Revision.TRANSFER)
        return True

    def transfer_progress(self, progress: TransferProgress) -> None:
        if self.transfer is not None and self.transfer.running:
            self.transfer.progress = progress
            self._mark(Revision.TRANSFER)

    def transfer_done(self, result: TransferResult) -> None:
        if self.transfer is not None and self.transfer.running:
            self.transfer.result = result
            self._mark(Revision.TRANSFER)

    def transfer_failed(self, message: str) -> None:
        if self.transfer is not None and self.transfer.running:
            self.transfer.error = message
            self._mark(Revision.TRANSFER)

    def transfer_cleared(self, transfer: Transfer) -> None:
        """The status line lets go of a finished transfer (not of a newer one)."""
        if self.transfer is transfer and not transfer.running:
            self.transfer = None
            self._mark(Revision.TRANSFER)

    # what the user chose

    def select(self, key: SandboxKey | None) -> bool:
        """Select a sandbox (or nothing); False when it is no sandbox this dashboard knows."""
        if key is not None and self.sandbox(key) is None:
            return False
        if key != self.selected:
            self.selected = key
            self._mark(Revision.SELECTION)
        return True

    def set_filter(self, text: str) -> None:
        if text != self.filter_text:
            self.filter_text = text
            self._mark(Revision.VIEW | Revision.TREE)

    def sort_by(self, key: str, reverse: bool | None = None) -> None:
        if key not in SORT_KEYS:
            raise ValueError(f"no column {key!r} to sort by")
        if reverse is None:
            reverse = not self.sort_reverse if key == self.sort_key else False
        self.sort_key, self.sort_reverse = key, reverse
        self._mark(Revision.VIEW | Revision.METERS)

    def cycle_sort(self) -> None:
        keys = [k for k in SORT_KEYS if k != "host" or len(self.hosts) > 1]
        current = keys.index(self.sort_key) if self.sort_key in keys else 0
        self.sort_by(keys[(current + 1) % len(keys)], reverse=False)

    def focus_host(self, name: str | None) -> None:
        """Show one host only (None: all of them again)."""
        if name is not None and name not in self.hosts:
            raise KeyError(name)
        if name != self.only_host:
            self.only_host = name
            if self.selected is not None and name is not None and split(self.selected)[0] != name:
                self.selected = None
                self._mark(Revision.SELECTION)
            self._mark(Revision.VIEW | Revision.TREE | Revision.METERS | Revision.HOSTS)

    # views

    def shown_hosts(self) -> list[HostState]:
        return [h for h in self.hosts.values() if self.only_host in (None, h.name)]

    def any_expiry(self) -> bool:
        """Whether a shown sandbox has a TTL (the table's expires column is shown then)."""
        return any(
            s.expires_at is not None for h in self.shown_hosts() for s in h.sandboxes.values()
        )

    def host(self, key: SandboxKey) -> HostState | None:
        return self.hosts.get(split(key)[0])

    def sandbox(self, key: SandboxKey) -> SandboxInfo | None:
        name, sandbox_id = split(key)
        host = self.hosts.get(name)
        return host.sandboxes.get(sandbox_id) if host is not None else None

    def selected_sandbox(self) -> SandboxInfo | None:
        return self.sandbox(self.selected) if self.selected is not None else None

    def tree(self) -> list[LineageNode]:
        """Every shown host's lineage under a host node, ids made fleet-wide, filtered: matches
        keep their ancestors so each one stays in its place."""
        if self._tree is None:
            self._tree = self._build_tree()
        return self._tree

    def _build_tree(self) -> list[LineageNode]:
        nodes: list[LineageNode] = []
        for host in self.shown_hosts():
            top = host_key(host.name)
            nodes.append(
                LineageNode(top, "host", host.name, phase=host.link.value, host=host.row())
            )
            cached = self._host_nodes.get(host.name)
            if cached is None:
                cached = self._host_nodes[host.name] = _qualified(host, top)
            nodes.extend(cached)
        return _filtered(nodes, self.filter_text)

    def rows(self, now: float) -> list[Row]:
        """The table: the sandboxes matching the filter (not the ancestors kept for context),
        in the chosen order."""
        rows: list[Row] = []
        needle = self.filter_text.lower().strip()
        for node in self.tree():
            if node.sandbox is None:
                continue
            name, _ = split(node.id)
            if needle and not _sandbox_matches(node.sandbox, name, needle):
                continue
            host = self.hosts[name]
            meter = host.meters.latest.get(node.sandbox.id)
            rows.append(Row(name, node.sandbox, meter, len(rows), stale=not host.connected))
        return sort_rows(rows, self.sort_key, self.sort_reverse, now)

    def fleet(self) -> FleetTotals:
        shown = self.shown_hosts()
        samples = [h.meters.host for h in shown if h.connected and h.meters.host is not None]
        return FleetTotals(
            hosts=len(shown),
            connected=sum(1 for h in shown if h.connected),
            sandboxes=sum(len(h.sandboxes) for h in shown),
            running=sum(1 for h in shown for s in h.sandboxes.values() if s.phase == "running"),
            host=_sum_totals(samples) if samples else None,
        )

    def metering_note(self) -> str:
        notes = {h.metering_note for h in self.shown_hosts() if h.metering_note}
        return "; ".join(sorted(notes))


def _qualified(host: HostState, top: str) -> list[LineageNode]:
    known = {n.id for n in host.lineage}
    return [
        LineageNode(
            join(host.name, node.id),
            node.kind,
            node.label,
            # A fork whose parent is gone hangs from its host, not from nowhere.
            join(host.name, node.parent_id) if node.parent_id in known else top,
            node.phase,
            node.sandbox,
        )
        for node in host.lineage
    ]


def _sandbox_matches(sandbox: SandboxInfo, host: str, needle: str) -> bool:
    fields = (sandbox.label, sandbox.id, sandbox.phase, sandbox.environment, host)
    return any(needle in f.lower() for f in fields)


def _node_matches(node: LineageNode, needle: str) -> bool:
    fields = [node.label, split(node.id)[1], node.phase]
    if node.sandbox is not None:
        fields.append(node.sandbox.environment)
    fields.append(split(node.id)[0])
    return any(needle in f.lower() for f in fields)


def _filtered(nodes: list[LineageNode], text: str) -> list[LineageNode]:
    needle = text.lower().strip()
    if not needle:
        return nodes
    by_id = {n.id: n for n in nodes}
    keep: set[str] = set()
    for node in nodes:
        if node.kind != "host" and _node_matches(node, needle):
            current: LineageNode | None = node
            while current is not None and current.id not in keep:
                keep.add(current.id)
                current = by_id.get(current.parent_id)
    return [n for n in nodes if n.id in keep]


def _sum(values: Iterable[int | float | None]) -> int | None:
    present = [v for v in values if v is not None]
    return int(sum(present)) if present else None


def _sum_totals(samples: list[HostTotals]) -> HostTotals:
    """Fleet totals: a figure is summed over the hosts that have it (none: no datum)."""
    cpu = [s.cpu_percent * (s.cpu_count or 1) for s in samples if s.cpu_percent is not None]
    cores = _sum(s.cpu_count for s in samples if s.cpu_percent is not None)
    return HostTotals(
        mem_naive=_sum(s.mem_naive for s in samples),
        mem_cow=_sum(s.mem_cow for s in samples),
        mem_saved=_sum(s.mem_saved for s in samples),
        template_mem=_sum(s.template_mem for s in samples),
        disk_naive=_sum(s.disk_naive for s in samples),
        disk_cow=_sum(s.disk_cow for s in samples),
        # Host CPU% is of the host's cores: the fleet's is of all of them.
        cpu_percent=(sum(cpu) / cores) if cpu and cores else None,
        cpu_count=_sum(s.cpu_count for s in samples),
        mem_total=_sum(s.mem_total for s in samples),
    )
