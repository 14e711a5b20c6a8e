"""What the dashboard knows, as plain data: no Textual, no engine calls (unit-testable)."""

from tui.state.dashboard import DashboardState, Revision
from tui.state.host import HostState, Link
from tui.state.keys import SandboxKey, host_of, join, split
from tui.state.rows import SORT_KEYS, TREE_ORDER, Row

__all__ = [
    "SORT_KEYS",
    "TREE_ORDER",
    "DashboardState",
    "HostState",
    "Link",
    "Revision",
    "Row",
    "SandboxKey",
    "host_of",
    "join",
    "split",
]
