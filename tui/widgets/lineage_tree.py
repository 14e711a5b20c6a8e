"""The lineage tree: environments, snapshots and sandboxes, forks nested under their parents."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from tui.models import LineageNode
from tui.palette import Palette


def matches(node: LineageNode, needle: str) -> bool:
    if not needle:
        return True
    fields = [node.label, node.id, node.phase]
    if node.sandbox is not None:
        fields.append(node.sandbox.environment)
    return any(needle in f.lower() for f in fields)


def visible_nodes(nodes: Sequence[LineageNode], needle: str) -> list[LineageNode]:
    """Nodes that match the filter, plus every ancestor so each match keeps its place."""
    needle = needle.lower().strip()
    if not needle:
        return list(nodes)
    by_id = {n.id: n for n in nodes}
    keep: set[str] = set()
    for node in nodes:
        if matches(node, needle):
            current: LineageNode | None = node
            while current is not None and current.id not in keep:
                keep.add(current.id)
                current = by_id.get(current.parent_id)
    return [n for n in nodes if n.id in keep]


class LineageTree(Tree[LineageNode]):
    """Rebuilt only when its shape changes; otherwise labels update in place.

    The periodic refresh therefore never moves the cursor nor collapses what the user opened.
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__("lineage", id=id, classes=classes)
        self.show_root = False
        self.guide_depth = 3
        self._shape: tuple[tuple[str, str, str], ...] = ()
        self._by_id: dict[str, TreeNode[LineageNode]] = {}
        self._collapsed: set[str] = set()
        self.palette = Palette({})

    def show(self, nodes: Sequence[LineageNode], needle: str = "") -> None:
        shown = visible_nodes(nodes, needle)
        shape = tuple((n.id, n.parent_id, n.kind) for n in shown)
        if shape == self._shape:
            for node in shown:
                tree_node = self._by_id.get(node.id)
                if tree_node is not None and tree_node.data != node:
                    tree_node.data = node
                    tree_node.set_label(self.label_for(node))
            return
        self._rebuild(shown, shape)

    def _rebuild(self, shown: list[LineageNode], shape: tuple[tuple[str, str, str], ...]) -> None:
        cursor = self.cursor_node.data.id if self.cursor_node and self.cursor_node.data else None
        for node_id, tree_node in self._by_id.items():
            if tree_node.allow_expand and not tree_node.is_expanded:
                self._collapsed.add(node_id)
            else:
                self._collapsed.discard(node_id)
        self._shape = shape
        self.clear()
        self._by_id = {}
        children: dict[str, list[LineageNode]] = {}
        ids = {n.id for n in shown}
        for node in shown:
            parent = node.parent_id if node.parent_id in ids else ""
            children.setdefault(parent, []).append(node)

        def add(parent: TreeNode[LineageNode], node: LineageNode) -> None:
            kids = children.get(node.id, [])
            expand = node.id not in self._collapsed
            if kids:
                branch = parent.add(self.label_for(node), data=node, expand=expand)
                for kid in kids:
                    add(branch, kid)
            else:
                branch = parent.add_leaf(self.label_for(node), data=node)
            self._by_id[node.id] = branch

        for node in children.get("", []):
            add(self.root, node)
        if cursor and cursor in self._by_id:
            # Lay the new lines out now so the node knows its line before the cursor moves.
            _ = self._tree_lines
            self.move_cursor(self._by_id[cursor], animate=False)

    def label_for(self, node: LineageNode) -> Text:
        palette = self.palette
        if node.kind == "environment":
            color = "grove-environment"
            return Text.assemble(
                ("◆ ", palette.style(color)), (node.label, palette.style(color, bold=True))
            )
        if node.kind == "snapshot":
            return Text.assemble(("◇ ", palette.style("grove-environment")), node.label)
        text = Text.assemble((palette.icon(node.phase) + " ", palette.phase(node.phase)))
        text.append(node.label, style="bold" if palette.bold else "")
        if node.sandbox is not None and node.sandbox.parent_id and not node.parent_id:
            text.append(" (parent gone)", style="dim")
        return text

    def restyle(self, palette: Palette) -> None:
        """The theme changed: recolour every label."""
        self.palette = palette
        for tree_node in self._by_id.values():
            if tree_node.data is not None:
                tree_node.set_label(self.label_for(tree_node.data))

    def select_sandbox(self, sandbox_id: str | None) -> None:
        """Follow a selection made elsewhere without emitting a new one when already there."""
        if sandbox_id is None or sandbox_id not in self._by_id:
            return
        current = self.cursor_node.data.id if self.cursor_node and self.cursor_node.data else None
        if current != sandbox_id:
            _ = self._tree_lines  # a fresh rebuild: lay out lines so the node knows its line
            self.move_cursor(self._by_id[sandbox_id], animate=False)

    @property
    def selected_sandbox(self) -> str | None:
        node = self.cursor_node
        if node is None or node.data is None or node.data.kind != "sandbox":
            return None
        return node.data.id
