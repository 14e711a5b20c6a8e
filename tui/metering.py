"""What the dashboard remembers of the metering stream: the latest sample and short histories.

Histories start empty when the dashboard opens; the engine keeps a few minutes per sandbox
(MeteringHistory), which `seed` merges in so a sparkline has a past from the first frame.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from tui.models import HostTotals, MeterSample, SandboxMeter

HISTORY = 60

Point = tuple[float, float]  # (sampled_at, value)


class MeterHistory:
    def __init__(self, size: int = HISTORY) -> None:
        self.size = size
        self.latest: dict[str, SandboxMeter] = {}
        self.host: HostTotals | None = None
        self.ts: float | None = None
        self.samples = 0
        self.seeded: set[str] = set()
        self._mem: dict[str, deque[Point]] = {}
        self._cpu: dict[str, deque[Point]] = {}

    def add(self, sample: MeterSample) -> None:
        self.ts = sample.ts
        self.samples += 1
        self.host = sample.host
        self.latest = {m.sandbox_id: m for m in sample.sandboxes}
        for meter in sample.sandboxes:
            # Gaps (None) are skipped rather than drawn as zero.
            if meter.unique_mem is not None:
                self._series(self._mem, meter.sandbox_id).append(
                    (sample.ts, float(meter.unique_mem))
                )
            if meter.cpu_percent is not None:
                self._series(self._cpu, meter.sandbox_id).append((sample.ts, meter.cpu_percent))

    def seed(self, sandbox_id: str, history: Iterable[SandboxMeter]) -> bool:
        """Put the engine's older samples before what the stream brought; True if that changed
        what a sparkline shows."""
        self.seeded.add(sandbox_id)
        added = False
        for table, field in ((self._mem, "unique_mem"), (self._cpu, "cpu_percent")):
            current = self._series(table, sandbox_id)
            first = current[0][0] if current else float("inf")
            older = [
                (m.sampled_at, float(value))
                for m in history
                if m.sampled_at is not None
                and m.sampled_at < first - 0.25
                and (value := getattr(m, field)) is not None
            ]
            merged = [*older, *current][-self.size :]
            if merged != list(current):
                current.clear()
                current.extend(merged)
                added = True
        return added

    def _series(self, table: dict[str, deque[Point]], key: str) -> deque[Point]:
        if key not in table:
            table[key] = deque(maxlen=self.size)
        return table[key]

    def memory(self, sandbox_id: str) -> list[float]:
        return [value for _, value in self._mem.get(sandbox_id, ())]

    def cpu(self, sandbox_id: str) -> list[float]:
        return [value for _, value in self._cpu.get(sandbox_id, ())]

    def forget(self, keep: set[str]) -> None:
        for table in (self._mem, self._cpu):
            for key in [k for k in table if k not in keep]:
                del table[key]
        self.seeded &= keep
