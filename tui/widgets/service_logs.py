"""A service's log, followed live from the engine (which keeps it on the host)."""

from __future__ import annotations

import time

from textual import work
from textual.timer import Timer

from engine.errors import GroveError
from tui.engine.gateway import EngineGateway
from tui.models import LogLine
from tui.widgets.log_view import LogPane

#: Lines are gathered for this long before one write: a flood is a few appends per second,
#: not one layout per engine batch.
FLUSH = 0.05


def format_line(line: LogLine) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(line.ts))
    millis = int((line.ts % 1) * 1000)
    return f"{stamp}.{millis:03d} {line.stream:<6} {line.text}"


class ServiceLogPane(LogPane):
    def __init__(
        self,
        gateway: EngineGateway,
        sandbox_id: str,
        sandbox_label: str,
        service: str,
        *,
        host: str = "",
        id: str | None = None,
    ) -> None:
        super().__init__(f"{service} @ {sandbox_label}", id=id)
        self.gateway = gateway
        self.sandbox_id = sandbox_id
        self.host = host
        self.service = service
        self.ended: str | None = None
        self._buffer: list[str] = []
        self._flush_timer: Timer | None = None

    def on_mount(self) -> None:
        super().on_mount()
        self._follow()

    @work(group="service-logs", exit_on_error=False)
    async def _follow(self) -> None:
        try:
            async for batch in self.gateway.service_logs(self.sandbox_id, self.service):
                self._buffer.extend(format_line(line) for line in batch)
                if self._flush_timer is None:
                    self._flush_timer = self.set_timer(FLUSH, self._flush)
        except GroveError as exc:
            self._end(f"{exc.message} → {exc.remedy}" if exc.remedy else exc.message)
            return
        self._end("the log stream ended")

    def _flush(self) -> None:
        self._flush_timer = None
        batch, self._buffer = self._buffer, []
        self.write_lines(batch)

    def _end(self, why: str) -> None:
        self._flush()
        self.ended = why
        self.write_lines([f"-- {why}"])
