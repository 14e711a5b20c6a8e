"""What idle sandboxes cost in CPU, and whether the host totals are honest right after a fork.

- Idle CPU: 8 sandboxes doing nothing, each QEMU's CPU time over 30 s, as a share of one core
  (target: at most 2% each under TCG).
- Totals after a fork: 3 s after forking a sandbox into 4 children, the engine's CoW-aware
  memory total must be below its naive total (the sum of every QEMU's RSS); the source's pause
  is reported beside it.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import psutil

from bench.foundation import ENV, exec_true
from engine.client import Grove

IDLE_SANDBOXES = 8
SETTLE_S = 5.0
WINDOW_S = 30.0
IDLE_TARGET = 0.02
MIB = 1 << 20


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def idle_cpu(client: Grove) -> dict[str, Any]:
    ids = [client.create(ENV).id for _ in range(IDLE_SANDBOXES)]
    try:
        for sandbox_id in ids:
            assert exec_true(client, sandbox_id) == 0
        time.sleep(SETTLE_S)
        pids = [s.pid for s in client.sandboxes() if s.id in ids and s.pid is not None]
        before = {pid: _cpu_seconds(pid) for pid in pids}
        started = time.monotonic()
        time.sleep(WINDOW_S)
        elapsed = time.monotonic() - started
        shares = sorted((_cpu_seconds(pid) - before[pid]) / elapsed for pid in pids)
    finally:
        for sandbox_id in ids:
            client.terminate(sandbox_id)
    median = statistics.median(shares)
    return {
        "name": f"idle sandbox CPU, {len(shares)} idle over {WINDOW_S:.0f} s (core share, p50)",
        "value": round(median, 4),
        "max": round(shares[-1], 4),
        "target": IDLE_TARGET,
        "meets_target": median <= IDLE_TARGET,
    }


def totals_after_fork(client: Grove, rounds: int) -> list[dict[str, Any]]:
    source = client.create(ENV)
    ratios: list[float] = []
    pauses: list[float] = []
    try:
        for _ in range(max(1, rounds // 2)):
            reply = client.fork(source.id, replicas=4)
            pauses.append(reply.paused_ms)
            time.sleep(3.0)
            host = client.top().host
            if host.cow_aware_mem_bytes is not None and host.naive_mem_bytes:
                ratios.append(host.cow_aware_mem_bytes / host.naive_mem_bytes)
            for child in reply.children:
                client.terminate(child.id)
    finally:
        client.terminate(source.id)
    ratio = statistics.median(ratios) if ratios else None
    return [
        {
            "name": "CoW-aware/naive memory total 3 s after a fork into 4 (p50)",
            "value": None if ratio is None else round(ratio, 3),
            "target": 1.0,
            "meets_target": None if ratio is None else ratio < 1.0,
        },
        {
            "name": "  source paused during those forks (ms, p50)",
            "value": round(statistics.median(pauses), 1),
            "target": 150,
            "meets_target": statistics.median(pauses) <= 150,
        },
    ]


def run(client: Grove, rounds: int) -> list[dict[str, Any]]:
    return [idle_cpu(client), *totals_after_fork(client, rounds)]


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's speed targets as ratios of figures measured in this same run."""
    p50 = {r["name"]: r.get("p50_ms") for r in results}

    def ratio(name: str, num: str, den: str, target: float, at_most: bool) -> dict[str, Any]:
        a, b = p50.get(num), p50.get(den)
        value = round(a / b, 2) if a and b else None
        ok = None if value is None else (value <= target if at_most else value >= target)
        return {"name": name, "value": value, "target": target, "meets_target": ok}

    create = "sandbox create -> first exec answered"
    one = "fork -> child's first exec answered"
    return [
        ratio("fork -> first exec / create -> first exec (<=)", one, create, 1.5, True),
        ratio(
            "8 children all answering / one child (<=)",
            "fork 8 children, all answering (wall)",
            one,
            3.0,
            True,
        ),
        ratio(
            "create -> first exec / warm exec true (<=)",
            create,
            "exec true round trip (client->guest->client)",
            2.5,
            True,
        ),
        ratio(
            "cold boot / fork -> first exec (>=)",
            "cold boot to agent ready (same run)",
            one,
            25.0,
            False,
        ),
    ]
