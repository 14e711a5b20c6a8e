"""The metering table's rows and their order: one row per sandbox of every shown host."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tui.models import SandboxInfo, SandboxMeter
from tui.state.keys import SandboxKey, join

TREE_ORDER = "tree"  # not a column: rows in the lineage tree's order
SORT_KEYS = (
    TREE_ORDER,
    "host",
    "name",
    "id",
    "phase",
    "unique_mem",
    "shared_mem",
    "vmm",
    "unique_disk",
    "cpu",
    "age",
    "expires",
    "network",
    "net_io",
)


@dataclass(frozen=True)
class Row:
    host: str
    sandbox: SandboxInfo
    meter: SandboxMeter | None
    #: Place in the lineage tree (depth first): the default order, so rows line up with it.
    position: int = 0
    #: Its host does not answer: the figures are the last ones it sent.
    stale: bool = False

    @property
    def key(self) -> SandboxKey:
        return join(self.host, self.sandbox.id)

    def value(self, key: str, now: float) -> Any:
        """The raw value a column sorts by; None sorts last."""
        s, m = self.sandbox, self.meter
        return {
            "tree": self.position,
            "host": self.host,
            "name": s.label.lower(),
            "id": s.id,
            "phase": s.phase,
            "unique_mem": m.unique_mem if m else None,
            "shared_mem": m.shared_mem if m else None,
            "vmm": m.vmm_overhead if m else None,
            "unique_disk": m.unique_disk if m else None,
            "cpu": m.cpu_percent if m else None,
            "age": (now - s.created_at) if s.created_at > 0 else None,
            "expires": s.expires_at,  # soonest first; none (never) last
            "network": s.network or None,
            "net_io": _traffic(m),
        }[key]


def _traffic(m: SandboxMeter | None) -> int | None:
    """Bytes in and out together (a row with neither has no datum)."""
    if m is None or (m.net_rx is None and m.net_tx is None):
        return None
    return (m.net_rx or 0) + (m.net_tx or 0)


def sort_rows(rows: list[Row], key: str, reverse: bool, now: float) -> list[Row]:
    def sort_value(row: Row) -> tuple[int, Any, str]:
        value = row.value(key, now)
        missing = value is None
        # Missing data sorts last whichever the direction.
        return (
            int(missing) if not reverse else -int(missing),
            value if not missing else 0,
            row.sandbox.label.lower(),
        )

    return sorted(rows, key=sort_value, reverse=reverse)
