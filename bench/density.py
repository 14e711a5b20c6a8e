"""Density: how many idle fork children of one parent this host holds, and what each costs.

- Fan-out: one parent is forked into idle children, STEP at a time (one fork call each), until a
  child no longer answers `exec true` within ANSWER_S, the host's available memory falls under
  MIN_AVAILABLE, or MAX_CHILDREN is reached. Reported: the count at which every child still
  answered, the CoW-aware memory each child costs, the host CPU the idle children take, and the
  CoW-aware/naive ratios (guest memory and whole footprint) at STEP children and at the maximum.
- Chain: a sandbox forked into a child, that child into a grandchild, 4 generations deep; the
  template memory each generation adds (read from the engine's metering once its holes are dug),
  beside the unique memory of the sandbox it was forked from.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import psutil

from bench.foundation import ENV
from engine.client import Grove, GroveError, HostMeter, MeterSample
from engine.fork.holes import DIG_DELAY_S

STEP = 8
ANSWER_S = 5.0
MIN_AVAILABLE = 2 << 30
MAX_CHILDREN = int(os.environ.get("GROVE_DENSITY_MAX", "128"))
SETTLE_S = 5.0
CPU_WINDOW_S = 10.0
GENERATIONS = 4
MIB = 1 << 20


def answers(client: Grove, sandbox_id: str, timeout: float = ANSWER_S) -> bool:
    try:
        return client.exec(sandbox_id, ["true"], deadline_s=timeout).exit_code == 0
    except GroveError:
        return False


def fresh_top(client: Grove, after: float) -> MeterSample:
    """A metering sample taken after `after` (time.time()), so it sees what just changed."""
    deadline = time.monotonic() + 30
    while True:
        top = client.top()
        if (top.sampled_at or 0.0) > after or time.monotonic() > deadline:
            return top
        time.sleep(0.2)


def ratios(host: HostMeter) -> dict[str, float | None]:
    def ratio(num: int | None, den: int | None) -> float | None:
        return round(num / den, 3) if num and den else None

    return {
        "guest": ratio(host.cow_aware_guest_mem_bytes, host.naive_guest_mem_bytes),
        "overall": ratio(host.cow_aware_mem_bytes, host.naive_mem_bytes),
    }


def idle_cpu_share(client: Grove, ids: list[str]) -> float:
    """Host CPU the idle children take together, in cores, over CPU_WINDOW_S."""
    procs = [psutil.Process(s.pid) for s in client.sandboxes() if s.id in set(ids) and s.pid]
    before = [sum(p.cpu_times()[:2]) for p in procs]
    started = time.monotonic()
    time.sleep(CPU_WINDOW_S)
    elapsed = time.monotonic() - started
    after = [sum(p.cpu_times()[:2]) for p in procs]
    return sum(a - b for a, b in zip(after, before, strict=True)) / elapsed


def fan_out(client: Grove) -> list[dict[str, Any]]:
    parent = client.create(ENV)
    children: list[str] = []
    answered = 0
    stopped_by = f"reached the cap of {MAX_CHILDREN} (GROVE_DENSITY_MAX)"
    baseline = fresh_top(client, time.time()).host
    at_step: HostMeter | None = None
    last: HostMeter | None = None
    try:
        while len(children) < MAX_CHILDREN:
            if psutil.virtual_memory().available < MIN_AVAILABLE:
                stopped_by = "host memory available fell under 2 GiB"
                break
            try:
                reply = client.fork(parent.id, replicas=STEP)
            except Exception as exc:  # the host said no: that is the limit
                stopped_by = f"fork failed: {exc}"
                break
            children += [c.id for c in reply.children]
            time.sleep(SETTLE_S)
            slow = [c for c in children if not answers(client, c)]
            if slow:
                stopped_by = f"{len(slow)} of {len(children)} did not answer within {ANSWER_S} s"
                break
            answered = len(children)
            last = fresh_top(client, time.time()).host
            if answered == STEP:
                at_step = last
        cpu = idle_cpu_share(client, children[:answered]) if answered else 0.0
    finally:
        for child in children:
            client.terminate(child)
        client.terminate(parent.id)
    per_child = (
        ((last.cow_aware_mem_bytes or 0) - (baseline.cow_aware_mem_bytes or 0)) / answered / MIB
        if last is not None and answered
        else None
    )
    at8 = ratios(at_step) if at_step is not None else {"guest": None, "overall": None}
    atmax = ratios(last) if last is not None else {"guest": None, "overall": None}
    return [
        {
            "name": "idle fork children that all answered",
            "value": answered,
            "target": 64,
            "meets_target": answered >= 64,
            "stopped_by": stopped_by,
        },
        {
            "name": "  CoW-aware memory per idle child (MiB)",
            "value": None if per_child is None else round(per_child, 2),
        },
        {
            "name": "  host CPU of all those idle children (cores)",
            "value": round(cpu, 3),
            "per_child": round(cpu / answered, 4) if answered else None,
        },
        {
            "name": f"  CoW-aware/naive guest memory, {STEP} children",
            "value": at8["guest"],
            "target": 0.25,
            "meets_target": None if at8["guest"] is None else at8["guest"] <= 0.25,
        },
        {
            "name": f"  CoW-aware/naive whole footprint, {STEP} children",
            "value": at8["overall"],
            "target": 0.45,
            "meets_target": None if at8["overall"] is None else at8["overall"] <= 0.45,
        },
        {"name": f"  CoW-aware/naive guest memory, {answered} children", "value": atmax["guest"]},
        {
            "name": f"  CoW-aware/naive whole footprint, {answered} children",
            "value": atmax["overall"],
        },
    ]


def template_bytes_settled(client: Grove) -> int:
    """Template memory once the holes a fork filled are dug: the source's template is dug only
    after DIG_DELAY_S without forks, so wait until the figure has held still that long."""
    hold = DIG_DELAY_S + 3.0
    value = fresh_top(client, time.time()).host.template_mem_bytes or 0
    since = time.monotonic()
    deadline = since + hold + 60
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = fresh_top(client, time.time()).host.template_mem_bytes or 0
        if now != value:
            value, since = now, time.monotonic()
        elif time.monotonic() - since >= hold:
            break
    return int(value)


def chain(client: Grove) -> list[dict[str, Any]]:
    current = client.create(ENV).id
    made = [current]
    added: list[float] = []
    unique: list[float] = []
    try:
        before = template_bytes_settled(client)
        for _ in range(GENERATIONS):
            source = next(s for s in fresh_top(client, time.time()).sandboxes if s.id == current)
            unique.append((source.unique_mem_bytes or 0) / MIB)
            reply = client.fork(current, replicas=1)
            current = reply.children[0].id
            made.append(current)
            assert answers(client, current)
            after = template_bytes_settled(client)
            added.append((after - before) / MIB)
            before = after
    finally:
        for sandbox_id in made:
            client.terminate(sandbox_id)
    return [
        {
            "name": f"template MiB each of {GENERATIONS} fork generations adds (p50)",
            "value": round(statistics.median(added), 1),
            "each": [round(a, 1) for a in added],
            "source_unique_mib": [round(u, 1) for u in unique],
            "target_rule": "each <= 1.2 x its source's unique MiB + 2",
            "meets_target": all(a <= 1.2 * u + 2 for a, u in zip(added, unique, strict=True)),
        }
    ]


def run(client: Grove, rounds: int) -> list[dict[str, Any]]:
    del rounds  # one fan-out to the limit is the measurement
    return [*chain(client), *fan_out(client)]
