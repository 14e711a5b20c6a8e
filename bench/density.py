"""Density: how many idle fork children of one parent this host holds, and what each costs.

- Fan-out: one parent is forked into idle children, STEP at a time (one fork call each), until a
  child no longer answers `exec true` within ANSWER_S, the host's available memory falls under
  MIN_AVAILABLE, or MAX_CHILDREN is reached. Reported: the count at which every child still
  answered, the CoW-aware memory each child costs, the host CPU the idle children take, and the
  CoW-aware/naive ratios (guest memory and whole footprint) at STEP children and at the maximum.
- Chain: a sandbox forked into a child, that child into a grandchild, 4 generations deep, once
  per memory layout of a fork (engine.fork.capture: delta over the source's memory file, or a
  full copy into a new one), each in an engine of its own: the guest memory (CoW-aware: unique
  pages plus template files) and the template memory each generation adds, read from the
  engine's metering once its holes are dug, beside the unique memory of the sandbox it was
  forked from, and the source's pause.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench.foundation import ENV
from bench.harness import engine_paths, engine_with
from engine.client import Grove, GroveError, HostMeter, MeterSample

STEP = 8
ANSWER_S = 5.0
MIN_AVAILABLE = 2 << 30
MAX_CHILDREN = int(os.environ.get("GROVE_DENSITY_MAX", "128"))
SETTLE_S = 5.0
CPU_WINDOW_S = 10.0
GENERATIONS = 4
# Template files are dug right after a fork; the chain reads memory once it held still this long.
SETTLE_HOLD_S = 5.0
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


class TotalsWatch:
    """The host totals sampled every second, on a thread and a connection of its own, while
    the block runs: with 2 or more sandboxes, CoW-aware should stay under naive throughout."""

    def __init__(self, client: Grove) -> None:
        self._paths = engine_paths(client)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="totals-watch", daemon=True)
        self.samples: list[tuple[int, int]] = []  # (CoW-aware, naive) bytes

    def __enter__(self) -> TotalsWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        watcher = Grove.connect(self._paths, autostart=False)
        try:
            while not self._stop.wait(1.0):
                host = watcher.top().host
                cow, naive = host.cow_aware_mem_bytes, host.naive_mem_bytes
                if host.sandboxes_running >= 2 and cow is not None and naive is not None:
                    self.samples.append((cow, naive))
        finally:
            watcher.close()

    def summary(self, during: str) -> dict[str, Any]:
        over = sum(1 for cow, naive in self.samples if cow >= naive)
        saved = [(naive - cow) / MIB for cow, naive in self.samples]
        return {
            "name": f"  1 s samples with CoW-aware >= naive, {during}",
            "value": over,
            "samples": len(self.samples),
            "least_saved_mib": round(min(saved), 1) if saved else None,
            "target": 0,
            "meets_target": bool(self.samples) and over == 0,
        }


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
    with TotalsWatch(client) as watch:
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
                    late = f"did not answer within {ANSWER_S} s"
                    stopped_by = f"{len(slow)} of {len(children)} {late}"
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
        watch.summary(f"forks of {STEP} up to {len(children)} children"),
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


def settled(client: Grove, hold: float) -> HostMeter:
    """Host memory once the holes a fork filled are dug: the figures held still for hold s."""
    host = fresh_top(client, time.time()).host
    value = (host.template_mem_bytes, host.cow_aware_guest_mem_bytes)
    since = time.monotonic()
    deadline = since + hold + 60
    while time.monotonic() < deadline:
        time.sleep(1.0)
        host = fresh_top(client, time.time()).host
        now = (host.template_mem_bytes, host.cow_aware_guest_mem_bytes)
        if now != value:
            value, since = now, time.monotonic()
        elif time.monotonic() - since >= hold:
            break
    return host


def chain(image_cache: Path, layout: str) -> list[dict[str, Any]]:
    """GENERATIONS forks in a chain, in an engine of its own that uses one memory layout."""
    env = {"GROVE_FORK_MEMORY": layout}
    template_added: list[float] = []
    guest_added: list[float] = []
    unique: list[float] = []
    paused: list[float] = []
    with engine_with(image_cache, **env) as client, TotalsWatch(client) as watch:
        current = client.create(ENV).id
        made = [current]
        try:
            before = settled(client, SETTLE_HOLD_S)
            for _ in range(GENERATIONS):
                source = next(s for s in fresh_top(client, time.time()).sandboxes
                              if s.id == current)  # fmt: skip
                unique.append((source.unique_mem_bytes or 0) / MIB)
                reply = client.fork(current, replicas=1)
                paused.append(reply.paused_ms)
                current = reply.children[0].id
                made.append(current)
                assert answers(client, current)
                after = settled(client, SETTLE_HOLD_S)
                template_added.append(
                    ((after.template_mem_bytes or 0) - (before.template_mem_bytes or 0)) / MIB
                )
                guest_added.append(
                    ((after.cow_aware_guest_mem_bytes or 0)
                     - (before.cow_aware_guest_mem_bytes or 0)) / MIB
                )  # fmt: skip
                before = after
        finally:
            for sandbox_id in made:
                client.terminate(sandbox_id)
    meets = all(g <= 1.2 * u + 2 for g, u in zip(guest_added, unique, strict=True))
    return [
        {
            "name": f"{layout} layout: guest MiB each of {GENERATIONS} fork generations adds (p50)",
            "value": round(statistics.median(guest_added), 1),
            "each": [round(a, 1) for a in guest_added],
            "template_mib_added": [round(a, 1) for a in template_added],
            "source_unique_mib": [round(u, 1) for u in unique],
            "paused_ms": [round(p) for p in paused],
            "target_rule": "each <= 1.2 x its source's unique MiB + 2",
            "meets_target": meets,
        },
        watch.summary(f"{layout} chain of {GENERATIONS}"),
    ]


def run(client: Grove, rounds: int, image_cache: Path) -> list[dict[str, Any]]:
    del rounds  # one fan-out to the limit is the measurement
    chains = [row for layout in ("delta", "full") for row in chain(image_cache, layout)]
    return [*chains, *fan_out(client)]
