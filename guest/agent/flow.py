"""Per-channel credit windows (see guest.protocol: WINDOW frames grant DATA bytes)."""

from __future__ import annotations

from ..protocol import INITIAL_WINDOW

#: Grant credit back once this much was consumed, so small writes do not each cost a frame.
GRANT_THRESHOLD = INITIAL_WINDOW // 4
_MAX_CREDIT = (1 << 32) - 1


class SendWindow:
    """How many DATA bytes we may still send; the peer tops it up with WINDOW frames."""

    __slots__ = ("available",)

    def __init__(self, initial: int = INITIAL_WINDOW) -> None:
        self.available = initial

    def grant(self, credit: int) -> None:
        self.available = min(self.available + credit, _MAX_CREDIT)

    def take(self, size: int) -> None:
        self.available -= size

    def reset(self, initial: int = INITIAL_WINDOW) -> None:
        self.available = initial


class RecvWindow:
    """Counts what we consumed of the peer's DATA and says when to send WINDOW back.

    ``buffered`` is what the peer sent us beyond what we consumed; more than the window means
    the peer ignores flow control, which the owner may log and survive.
    """

    __slots__ = ("buffered", "unacked")

    def __init__(self) -> None:
        self.buffered = 0
        self.unacked = 0

    def received(self, size: int) -> bool:
        """Record an arrival; False if it exceeds the granted window."""
        self.buffered += size
        return self.buffered <= INITIAL_WINDOW

    def consumed(self, size: int, idle: bool) -> int:
        """Record consumption; the credit to grant now (0 to wait for a bigger batch).

        ``idle`` means nothing is left buffered: grant at once so an interactive writer never
        waits on a batch that will not fill.
        """
        self.buffered -= size
        self.unacked += size
        if self.unacked >= GRANT_THRESHOLD or (idle and self.unacked > 0):
            credit, self.unacked = self.unacked, 0
            return credit
        return 0

    def reset(self) -> None:
        self.buffered = 0
        self.unacked = 0
