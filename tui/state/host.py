"""One host of the fleet as the dashboard knows it: its connection, inventory and metering."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from engine.errors import GroveError
from tui.metering import MeterHistory
from tui.models import (
    EngineInfo,
    EnvironmentInfo,
    EventInfo,
    HostRow,
    InventoryChange,
    LineageNode,
    SandboxInfo,
    ServiceInfo,
)


class Link(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    #: It had worked; the controller keeps trying (the last error says why it dropped).
    RECONNECTING = "reconnecting"
    #: Never reached, or lost for longer than a reconnect should take; still retried.
    UNREACHABLE = "unreachable"


@dataclass
class HostState:
    name: str
    where: str = ""
    link: Link = Link.CONNECTING
    error: GroveError | None = None
    info: EngineInfo | None = None
    environments: list[EnvironmentInfo] = field(default_factory=list)
    sandboxes: dict[str, SandboxInfo] = field(default_factory=dict)
    #: The engine's lineage forest, flattened parents first (sandboxes attached by id).
    lineage: list[LineageNode] = field(default_factory=list)
    meters: MeterHistory = field(default_factory=MeterHistory)
    metering_note: str = ""
    services: dict[str, list[ServiceInfo]] = field(default_factory=dict)
    #: The newest event seen: a reconnected watch resumes after it.
    cursor: int = 0

    @property
    def connected(self) -> bool:
        return self.link is Link.CONNECTED

    def apply(self, change: InventoryChange) -> list[EventInfo]:
        """Fold one watch update in; returns the events that are new to this dashboard."""
        if change.full:
            self.sandboxes = {s.id: s for s in change.sandboxes}
        else:
            for sandbox in change.sandboxes:
                self.sandboxes[sandbox.id] = sandbox
            for gone in change.removed:
                self.sandboxes.pop(gone, None)
        if change.environments is not None:
            self.environments = list(change.environments)
        if change.lineage is not None or change.full:
            self.lineage = list(change.lineage or ())
        self.lineage = attach_sandboxes(self.lineage, list(self.sandboxes.values()))
        for sandbox_id in set(self.services) - set(self.sandboxes):
            del self.services[sandbox_id]
        self.meters.forget(set(self.sandboxes))
        fresh = [e for e in change.events if e.seq > self.cursor]
        self.cursor = max(self.cursor, change.cursor)
        return fresh

    def row(self) -> HostRow:
        host = self.meters.host
        return HostRow(
            name=self.name,
            link=self.link.value,
            error=self.error.message if self.error is not None else "",
            accelerator=self.info.accelerator if self.info is not None else "",
            sandboxes=len(self.sandboxes),
            running=sum(1 for s in self.sandboxes.values() if s.phase == "running"),
            mem_cow=host.mem_cow if host is not None and self.connected else None,
        )


def attach_sandboxes(nodes: list[LineageNode], sandboxes: list[SandboxInfo]) -> list[LineageNode]:
    """The engine's lineage names sandboxes; the table needs their details. A listed sandbox the
    lineage does not have (yet) goes under its parent, or its environment."""
    by_id = {s.id: s for s in sandboxes}
    seen = {n.id for n in nodes}
    attached = [_attach(n, by_id.get(n.id)) if n.kind == "sandbox" else n for n in nodes]
    environments = {n.label: n.id for n in nodes if n.kind == "environment"}
    for sandbox in sandboxes:
        if sandbox.id not in seen:
            parent = (
                sandbox.parent_id
                if sandbox.parent_id in seen
                else environments.get(sandbox.environment, "")
            )
            attached.append(
                LineageNode(sandbox.id, "sandbox", sandbox.label, parent, sandbox.phase, sandbox)
            )
    return attached


def _attach(node: LineageNode, sandbox: SandboxInfo | None) -> LineageNode:
    if sandbox is None:
        return replace(node, sandbox=None) if node.sandbox is not None else node
    if node.sandbox == sandbox and node.phase == sandbox.phase:
        return node
    return replace(node, sandbox=sandbox, phase=sandbox.phase, label=sandbox.label)
