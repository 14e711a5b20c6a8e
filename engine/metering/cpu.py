"""CPU use as deltas of cumulative CPU time between two samples (what top shows)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil

from engine.metering.smaps import read_proc

_TICKS = os.sysconf("SC_CLK_TCK")
# CPU times count in clock ticks (10 ms): a shorter window would report 0% or 200% noise.
MIN_WINDOW_S = 0.25


@dataclass(frozen=True, slots=True)
class ProcStat:
    start: int  # clock ticks since boot: tells a reused pid from ours
    cpu_s: float  # user + system


def read_stat(pid: int) -> ProcStat:
    data = read_proc(f"/proc/{pid}/stat")
    # The command name may contain spaces or parentheses; fields resume after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    return ProcStat(start=int(fields[19]), cpu_s=(int(fields[11]) + int(fields[12])) / _TICKS)


@dataclass
class _Window:
    at: float
    cpu_s: float
    percent: float | None = None


class CpuMeter:
    """Percent of one core per process (can exceed 100 with several vCPUs) and host-wide."""

    def __init__(self) -> None:
        self._procs: dict[tuple[int, int], _Window] = {}
        self._host: tuple[float, float] | None = None  # (busy, total) seconds
        self._host_percent: float | None = None

    def process(self, pid: int, stat: ProcStat, now: float) -> float | None:
        key = (pid, stat.start)
        last = self._procs.get(key)
        if last is None:
            self._procs[key] = _Window(now, stat.cpu_s)
            return None  # one reading is no rate
        elapsed = now - last.at
        if elapsed < MIN_WINDOW_S:
            return last.percent
        percent = max(0.0, (stat.cpu_s - last.cpu_s) / elapsed * 100.0)
        self._procs[key] = _Window(now, stat.cpu_s, percent)
        return percent

    def host(self) -> float | None:
        """Busy share of all host CPUs since the previous call, in percent."""
        times = psutil.cpu_times()
        idle = times.idle + getattr(times, "iowait", 0.0)
        # Linux counts guest time inside user time already (psutil does the same subtraction).
        total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
        busy = total - idle
        last = self._host
        if last is not None and total - last[1] >= MIN_WINDOW_S:
            self._host_percent = max(0.0, min(100.0, (busy - last[0]) / (total - last[1]) * 100))
            self._host = (busy, total)
        elif last is None:
            self._host = (busy, total)
        return self._host_percent

    def forget(self, keep: set[tuple[int, int]]) -> None:
        for key in [k for k in self._procs if k not in keep]:
            del self._procs[key]
