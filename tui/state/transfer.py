"""The one file transfer (push or pull) the status line follows: under way, then its outcome.

Plain data: the controller moves it as the gateway reports, the transfer line renders it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tui.models import TransferProgress, TransferResult

#: A rate measured over less than this would mostly be noise.
MIN_RATE_S = 0.25


@dataclass
class Transfer:
    #: push | pull
    direction: str
    #: The sandbox's label (for the messages).
    sandbox: str
    #: As the user typed them: local then guest for a push, guest then local for a pull.
    source: str
    dest: str
    progress: TransferProgress | None = None
    result: TransferResult | None = None
    #: Why it failed (the error's message); None while it runs or once it worked.
    error: str | None = None

    @property
    def running(self) -> bool:
        return self.result is None and self.error is None

    @property
    def fraction(self) -> float | None:
        p = self.progress
        if p is None or not p.total:
            return None
        return max(0.0, min(1.0, p.done / p.total))

    @property
    def rate(self) -> float | None:
        """Bytes a second so far (None: too early to tell, or not timed)."""
        if self.result is not None:
            elapsed, moved = self.result.elapsed, self.result.bytes
        elif self.progress is not None:
            elapsed, moved = self.progress.elapsed, self.progress.done
        else:
            return None
        if elapsed is None or elapsed < MIN_RATE_S or moved <= 0:
            return None
        return moved / elapsed
