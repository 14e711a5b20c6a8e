"""The lineage tree: hosts, then their environments, snapshots and sandboxes, forks nested
under their parents. It draws DashboardState.tree() whenever the tree's revision moves."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from tui import format as fmt
from tui.models import HostRow, LineageNode
from tui.palette import Palette
from tui.state import DashboardState, split
from tui.widgets.redraws import Redraws

#: What a host's label may take of the tree's width (its pane is 34 columns with borders).
HOST_LABEL_WIDTH = 28
HOST_STYLE = {
    "connected": "grove-running",
    "connecting": "grove-paused",
    "reconnecting": "grove-paused",
    "unreachable": "grove-failed",
}


class LineageTree(Tree[LineageNode], Redraws):
    """Rebuilt only when its shape changes; otherwise labels update in place.

    An update therefore never moves the cursor nor collapses what the user opened.
    """

    tree_rev: reactive[int] = reactive(0, init=False)
    meters_rev: reactive[int] = reactive(0, init=False)  # host rows show their memory
    selection_rev: reactive[int] = reactive(0, init=False)

    def __init__(
        self, state: DashboardState, *, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__("lineage", id=id, classes=classes)
        self.state = state
        self.show_root = False
        self.guide_depth = 3
        self._shape: tuple[tuple[str, str, str], ...] = ()
        self._by_id: dict[str, TreeNode[LineageNode]] = {}
        self._collapsed: set[str] = set()
        self.palette = Palette({})

    def draw(self) -> None:
        self.show(self.state.tree())
        self.select_sandbox(self.state.selected)

    def watch_selection_rev(self) -> None:
        self.select_sandbox(self.state.selected)  # no redraw: the cursor follows

    def show(self, shown: Sequence[LineageNode]) -> None:
        shape = tuple((n.id, n.parent_id, n.kind) for n in shown)
        if shape == self._shape:
            for node in shown:
                tree_node = self._by_id.get(node.id)
                if tree_node is not None and tree_node.data is not node and tree_node.data != node:
                    tree_node.data = node
                    tree_node.set_label(self.label_for(node))
            return
        self._rebuild(shown, shape)

    def _rebuild(
        self, shown: Sequence[LineageNode], shape: tuple[tuple[str, str, str], ...]
    ) -> None:
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
        if node.kind == "host" and node.host is not None:
            return self._host_label(node.host)
        if node.kind == "environment":
            color = "grove-environment"
            return Text.assemble(
                ("◆ ", palette.style(color)), (node.label, palette.style(color, bold=True))
            )
        if node.kind == "snapshot":
            return Text.assemble(("◇ ", palette.style("grove-environment")), node.label)
        text = Text.assemble((palette.icon(node.phase) + " ", palette.phase(node.phase)))
        text.append(node.label, style="bold" if palette.bold else "")
        if node.sandbox is not None and node.sandbox.parent_id and not split(node.parent_id)[1]:
            text.append(" (parent gone)", style="dim")
        return text

    def _host_label(self, host: HostRow) -> Text:
        palette = self.palette
        style = palette.style(HOST_STYLE.get(host.link, "grove-failed"))
        text = Text.assemble(("▣ ", style), (host.name, palette.style("", bold=True)))
        if host.link != "connected":
            text.append(f" {host.link}", style=style)
            # The error as far as the pane's width goes (the host bar has more of it): a longer
            # label would give the whole tree a horizontal scrollbar.
            room = HOST_LABEL_WIDTH - len(text) - 2
            if host.error and room >= 8:
                error = host.error if len(host.error) <= room else host.error[: room - 1] + "…"
                text.append(f": {error}", style="dim")
            return text
        details = [host.accelerator or "", f"{host.running}/{host.sandboxes}"]
        if host.mem_cow is not None:
            details.append(fmt.size(host.mem_cow))
        text.append(" " + " · ".join(d for d in details if d), style="dim")
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
    def cursor_key(self) -> str | None:
        """The fleet key of the node under the cursor, whatever its kind."""
        node = self.cursor_node
        return node.data.id if node is not None and node.data is not None else None

    @property
    def selected_sandbox(self) -> str | None:
        node = self.cursor_node
        if node is None or node.data is None or node.data.kind != "sandbox":
            return None
        return node.data.id
