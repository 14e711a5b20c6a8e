"""Messages workers post back to the UI: small dataclasses, one fact each.

Host messages name their host: every host has its own workers, and the controller folds
each fact into DashboardState under that name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from textual.message import Message

from engine.errors import GroveError
from tui.models import (
    EngineInfo,
    InventoryChange,
    MeterSample,
    SandboxMeter,
    ServiceInfo,
    TransferProgress,
    TransferResult,
)


@dataclass
class HostConnecting(Message):
    host: str


@dataclass
class HostConnected(Message):
    host: str
    info: EngineInfo
    where: str = ""


@dataclass
class HostLost(Message):
    """The host's engine stopped answering (or never did); its link keeps trying."""

    host: str
    error: GroveError
    #: It had answered, and not so long ago that it should be called unreachable yet.
    reconnecting: bool = False


@dataclass
class InventoryChanged(Message):
    host: str
    change: InventoryChange


@dataclass
class MeterSampled(Message):
    host: str
    sample: MeterSample


@dataclass
class MeteringUnavailable(Message):
    host: str
    error: GroveError


@dataclass
class HistoryLoaded(Message):
    """The engine's recent metering of one sandbox, to give its sparklines a past."""

    host: str
    sandbox_id: str
    samples: list[SandboxMeter]


@dataclass
class ServicesLoaded(Message):
    """The services of one sandbox (shown under the sparklines of the selected sandbox)."""

    host: str
    sandbox_id: str
    services: list[ServiceInfo]


class StateChanged(Message):
    """DashboardState moved; the screen reads what changed from it. Bursts collapse into one."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StateChanged)


@dataclass
class Activity(Message):
    """A long operation's progress (a pull, a demo step); text None when it is over."""

    text: str | None
    fraction: float | None = None

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, Activity) and message.text is not None


@dataclass
class ActionFailed(Message):
    action: str
    error: GroveError


@dataclass
class ActionDone(Message):
    text: str
    #: What to do next on the UI side (open the new service's log, say).
    then: Callable[[], object] | None = field(default=None, compare=False)


@dataclass
class TransferProgressed(Message):
    """The file transfer moved on; a newer update replaces one not yet handled."""

    progress: TransferProgress

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, TransferProgressed)


@dataclass
class TransferFinished(Message):
    result: TransferResult


@dataclass
class TransferFailed(Message):
    action: str
    error: GroveError


@dataclass
class SandboxHighlighted(Message):
    """The user moved to a sandbox in the tree or the table (None: not a sandbox)."""

    key: str | None
