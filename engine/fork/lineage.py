"""The lineage tree: environments at the roots, named snapshots and sandboxes below them,
forks nested under their source. Anonymous fork snapshots stay hidden: a fork is shown as a
child of the sandbox it was forked from."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.sandbox.phase import Phase
from engine.store.records import SandboxRecord, TemplateRecord


@dataclass
class Node:
    id: str
    kind: str  # "environment" | "snapshot" | "sandbox"
    name: str
    phase: str
    created_at: float
    children: list[Node] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "phase": self.phase,
            "created_at": self.created_at,
            "children": [c.to_dict() for c in self.children],
        }

    def find(self, node_id: str) -> Node | None:
        if self.id == node_id or self.name == node_id:
            return self
        for child in self.children:
            found = child.find(node_id)
            if found is not None:
                return found
        return None


def build(
    environments: Iterable[str],
    templates: Iterable[TemplateRecord],
    sandboxes: Iterable[SandboxRecord],
) -> list[Node]:
    templates = list(templates)
    live = [s for s in sandboxes if s.phase is not Phase.TERMINATED]
    env_nodes = {name: Node(name, "environment", name, "ready", 0.0) for name in environments}
    by_template = {t.id: t for t in templates}
    sandbox_nodes = {s.id: Node(s.id, "sandbox", s.name, s.phase.value, s.created_at) for s in live}
    snapshot_nodes = {
        t.id: Node(t.id, "snapshot", t.name or t.id, t.phase, t.created_at)
        for t in templates
        if t.name
    }
    roots: list[Node] = []

    def env_node(name: str) -> Node:
        if name not in env_nodes:
            env_nodes[name] = Node(name, "environment", name, "ready", 0.0)
        return env_nodes[name]

    for template_id, node in snapshot_nodes.items():
        source = by_template[template_id].source_sandbox
        if source in sandbox_nodes:
            sandbox_nodes[source].children.append(node)
        else:
            roots.append(node)  # its source is gone: an orphan surfaces as a root
    for record in live:
        node = sandbox_nodes[record.id]
        if record.parent_id:
            parent = sandbox_nodes.get(record.parent_id)
            if parent is not None:
                parent.children.append(node)
            else:
                roots.append(node)
            continue
        origin = record.origin or record.template_id or ""
        if origin in snapshot_nodes:
            snapshot_nodes[origin].children.append(node)
        else:
            env_node(record.environment).children.append(node)
    ordered = sorted(env_nodes.values(), key=lambda n: n.name) + sorted(roots, key=_order)
    for root in ordered:
        _sort(root)
    return ordered


def _order(node: Node) -> tuple[float, str]:
    return (node.created_at, node.name)


def _sort(node: Node) -> None:
    node.children.sort(key=_order)
    for child in node.children:
        _sort(child)
