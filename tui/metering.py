"""What the dashboard remembers of the metering stream: the latest sample and short histories."""

from __future__ import annotations

from collections import deque

from tui.models import HostTotals, MeterSample, SandboxMeter

HISTORY = 60


class MeterHistory:
    def __init__(self, size: int = HISTORY) -> None:
        self.size = size
        self.latest: dict[str, SandboxMeter] = {}
        self.host: HostTotals | None = None
        self.ts: float | None = None
        self._mem: dict[str, deque[float]] = {}
        self._cpu: dict[str, deque[float]] = {}

    def add(self, sample: MeterSample) -> None:
        self.ts = sample.ts
        self.host = sample.host
        self.latest = {m.sandbox_id: m for m in sample.sandboxes}
        for meter in sample.sandboxes:
            # Gaps (None) are skipped rather than drawn as zero.
            if meter.unique_mem is not None:
                self._series(self._mem, meter.sandbox_id).append(float(meter.unique_mem))
            if meter.cpu_percent is not None:
                self._series(self._cpu, meter.sandbox_id).append(meter.cpu_percent)

    def _series(self, table: dict[str, deque[float]], key: str) -> deque[float]:
        if key not in table:
            table[key] = deque(maxlen=self.size)
        return table[key]

    def memory(self, sandbox_id: str) -> list[float]:
        return list(self._mem.get(sandbox_id, ()))

    def cpu(self, sandbox_id: str) -> list[float]:
        return list(self._cpu.get(sandbox_id, ()))

    def forget(self, keep: set[str]) -> None:
        for table in (self._mem, self._cpu):
            for key in [k for k in table if k not in keep]:
                del table[key]
