"""Messages workers post back to the UI: small dataclasses, one fact each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from textual.message import Message

from engine.errors import GroveError
from tui.models import (
    EngineInfo,
    EnvironmentInfo,
    EventInfo,
    LineageNode,
    SandboxInfo,
    SandboxMeter,
    ServiceInfo,
)


@dataclass
class EngineConnected(Message):
    info: EngineInfo


@dataclass
class EngineStatus(Message):
    info: EngineInfo


@dataclass
class EngineLost(Message):
    error: GroveError


@dataclass
class InventoryLoaded(Message):
    """A refresh: what exists now. Lineage is the engine's, or derived from parent ids."""

    environments: list[EnvironmentInfo]
    sandboxes: list[SandboxInfo]
    lineage: list[LineageNode]


class MeteringUpdated(Message):
    """New samples are in the MeterHistory; bursts collapse into one repaint."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, MeteringUpdated)


@dataclass
class MeteringUnavailable(Message):
    error: GroveError


@dataclass
class EventsReceived(Message):
    events: list[EventInfo]


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
class ServicesLoaded(Message):
    """The services of one sandbox (shown under the sparklines of the selected sandbox)."""

    sandbox_id: str
    services: list[ServiceInfo]


@dataclass
class HistoryLoaded(Message):
    """The engine's recent metering of one sandbox, to give its sparklines a past."""

    sandbox_id: str
    samples: list[SandboxMeter]


@dataclass
class SandboxHighlighted(Message):
    """The user moved to a sandbox in the tree or the table (None: not a sandbox)."""

    sandbox_id: str | None
