"""The Events tab: every host's lifecycle events as they arrive, written from
DashboardState's event log (only the ones not written yet)."""

from __future__ import annotations

import json
import time

from textual.reactive import reactive

from tui.models import EventInfo
from tui.state import DashboardState
from tui.state.dashboard import LoggedEvent
from tui.widgets.log_view import LogPane
from tui.widgets.redraws import Redraws


def format_event(event: EventInfo, label: str, host: str = "") -> str:
    stamp = time.strftime("%m-%d %H:%M:%S", time.localtime(event.ts))
    detail = " ".join(
        f"{k}={json.dumps(v) if isinstance(v, list | dict) else v}" for k, v in event.detail.items()
    )
    where = f"{host:<10} " if host else ""
    return f"{stamp}  {where}{label:<14} {event.kind:<11} {detail}".rstrip()


class EventLogPane(LogPane, Redraws):
    events_rev: reactive[int] = reactive(0, init=False)

    def __init__(self, state: DashboardState, *, id: str | None = None) -> None:
        super().__init__("events", id=id)
        self.state = state
        self.written = 0

    def draw(self) -> None:
        total = self.state.events_total
        new = min(total - self.written, len(self.state.events))
        if new <= 0:
            return
        fleet = len(self.state.hosts) > 1
        batch = list(self.state.events)[-new:]
        self.write_lines(self._line(e, fleet) for e in batch)
        self.written = total

    @staticmethod
    def _line(logged: LoggedEvent, fleet: bool) -> str:
        return format_event(logged.event, logged.label, logged.host if fleet else "")
