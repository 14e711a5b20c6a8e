"""Metering numbers at 8 idle sandboxes of one template (forks of one parent when fork exists):
CoW-aware vs naive memory, and what the sampler itself costs, at 8 and emulated at 100.

The meter runs in this process on the engine's real VMs (same code as the engine's sampler),
so its CPU time can be taken with time.thread_time around every sample.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from bench.foundation import ENV, exec_true
from bench.harness import engine_paths
from engine.client import Grove
from engine.metering.meter import DEFAULT_MAX_WALK_AGE_S, Meter, Target
from engine.metering.sample import Reading
from engine.metering.sampler import Sampler
from engine.store.db import Store

MIB = 1 << 20
SANDBOXES = 8
EMULATED = 100
SETTLE_S = 25.0  # > the engine's 20 s delay before it gives back a fork's zero pages
CORE_BUDGET = 0.05  # sampling may cost at most 5% of one core at 100 sandboxes


def _make_family(client: Grove) -> tuple[list[str], list[str]]:
    """(the measured sandboxes, everything to terminate afterwards)."""
    parent = client.create(ENV)
    reply = client.fork(parent.id, replicas=SANDBOXES)
    children = [c.id for c in reply.children]
    return children, [parent.id, *children]


def _targets(store: Store, ids: Sequence[str]) -> list[Target]:
    out = []
    for sandbox_id in ids:
        record = store.get_sandbox(sandbox_id)
        assert record is not None and record.pid, f"{sandbox_id} is not running"
        out.append(
            Target(
                id=record.id,
                name=record.name,
                phase=record.phase.value,
                pid=record.pid,
                pid_start=record.pid_start,
                mem_path=record.mem_path,
                disk_path=record.disk_path,
                template_id=record.template_id,
            )
        )
    return out


def _ratio(part: int | None, whole: int | None) -> float | None:
    return None if part is None or not whole else part / whole


def _footprint(meter: Meter, targets: list[Target], samples: int) -> dict[str, Any]:
    readings: list[Reading] = []
    for _ in range(samples):
        readings.append(meter.measure(targets))
        time.sleep(1.0)
    guest = [
        _ratio(r.host.cow_aware_guest_mem_bytes, r.host.naive_guest_mem_bytes) for r in readings
    ]
    total = [_ratio(r.host.cow_aware_mem_bytes, r.host.naive_mem_bytes) for r in readings]
    last = readings[-1]

    def med(values: list[Any]) -> float:
        return float(statistics.median(v for v in values if v is not None))

    def mib(value: int | None) -> float | None:
        return None if value is None else round(value / MIB, 1)

    per = last.sandboxes
    return {
        "guest_ratio": round(med(guest), 3),
        "total_ratio": round(med(total), 3),
        "samples": samples,
        "naive_mem_mib": mib(last.host.naive_mem_bytes),
        "cow_aware_mem_mib": mib(last.host.cow_aware_mem_bytes),
        "naive_guest_mem_mib": mib(last.host.naive_guest_mem_bytes),
        "cow_aware_guest_mem_mib": mib(last.host.cow_aware_guest_mem_bytes),
        "template_mem_mib": mib(last.host.template_mem_bytes),
        "unique_mem_mib_median": mib(int(med([s.unique_mem_bytes for s in per]))),
        "shared_mem_mib_median": mib(int(med([s.shared_mem_bytes for s in per]))),
        "vmm_overhead_mib_median": mib(int(med([s.vmm_overhead_bytes for s in per]))),
        "rss_mib_median": mib(int(med([s.rss_bytes for s in per]))),
    }


def _cost_at_1hz(meter: Meter, targets: list[Target], seconds: float) -> dict[str, Any]:
    """CPU seconds the sampling thread spends per wall second at a 1 s interval."""
    meter.measure(targets)  # baselines and first walks, as after the sampler's first tick
    walks, scans, reuses = meter.walks, meter.scans, meter.reuses
    cpu = 0.0
    proc_started = time.process_time()
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        tick = time.monotonic()
        t0 = time.thread_time()
        meter.measure(targets)
        cpu += time.thread_time() - t0
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    wall = time.monotonic() - started
    return {
        "cpu_s_per_s": cpu / wall,
        "process_cpu_s_per_s": (time.process_time() - proc_started) / wall,
        "walks": meter.walks - walks,
        "scans": meter.scans - scans,
        "reuses": meter.reuses - reuses,
        "sandboxes": len(targets),
    }


def _cost_per_sample(meter: Meter, targets: list[Target], iterations: int) -> float:
    """CPU seconds of one sample taken back to back (every process's smaps walked each time)."""
    meter.measure(targets)
    t0 = time.thread_time()
    for _ in range(iterations):
        meter.measure(targets)
    return (time.thread_time() - t0) / iterations


def _emulate(targets: list[Target], copies: int) -> list[Target]:
    # Distinct ids: each emulated sandbox keeps its own cached walk, as a real one would.
    return [replace(t, id=f"{t.id}-{i}") for i in range(copies) for t in targets]


async def _loop_stall(targets: list[Target], in_thread: bool, seconds: float) -> float:
    """Worst lateness of a 5 ms timer on the event loop while the sampler runs (ms)."""
    sampler = Sampler(
        lambda: [(t, None) for t in targets],
        interval_s=0.25,
        meter=Meter(max_walk_age_s=0),  # worst case: every process walked every tick
        in_thread=in_thread,
    )
    await sampler.guest.close()
    sampler.start()
    loop = asyncio.get_running_loop()
    worst = 0.0
    end = loop.time() + seconds
    try:
        while loop.time() < end:
            t0 = loop.time()
            await asyncio.sleep(0.005)
            worst = max(worst, (loop.time() - t0 - 0.005) * 1000)
    finally:
        await sampler.stop()
    return worst


def run(client: Grove, rounds: int) -> list[dict[str, Any]]:
    ids, made = _make_family(client)
    store = Store(engine_paths(client).database)
    try:
        for sandbox_id in ids:
            assert exec_true(client, sandbox_id) == 0
        time.sleep(SETTLE_S)  # let restore activity die down: we measure idle sandboxes
        targets = _targets(store, ids)
        foot = _footprint(Meter(), targets, samples=max(5, rounds))
        # Longer than the walk age, so the periodic full walks are in the bill too.
        window = max(2.0 * rounds, DEFAULT_MAX_WALK_AGE_S + 5.0)
        at8 = _cost_at_1hz(Meter(), targets, seconds=window)
        full8 = _cost_per_sample(Meter(max_walk_age_s=0), targets, iterations=20)
        copies = -(-EMULATED // len(targets))  # 13 x 8 = 104 >= 100
        emulated = _emulate(targets, copies)
        at100 = _cost_at_1hz(Meter(), emulated, seconds=window)
        full100 = _cost_per_sample(Meter(max_walk_age_s=0), emulated, iterations=5)
        big = _emulate(targets, 4)
        stall_inline = asyncio.run(_loop_stall(big, in_thread=False, seconds=5.0))
        stall_thread = asyncio.run(_loop_stall(big, in_thread=True, seconds=5.0))
    finally:
        store.close()
        for sandbox_id in made:
            client.terminate(sandbox_id)
    per_sandbox = at8["cpu_s_per_s"] / len(targets)
    extrapolated = per_sandbox * EMULATED
    emulated_100 = at100["cpu_s_per_s"] / len(emulated) * EMULATED
    mode = "forks of one parent" if len(made) > len(ids) else "sandboxes of one template"
    return [
        {
            "name": f"guest memory CoW-aware/naive, {len(ids)} idle {mode}",
            "value": foot["guest_ratio"],
            "target": 0.25,
            "meets_target": foot["guest_ratio"] <= 0.25,
            **foot,
        },
        {
            "name": "whole footprint CoW-aware/naive (incl. VMM overhead)",
            "value": foot["total_ratio"],
            "target": 0.5,
            "meets_target": foot["total_ratio"] <= 0.5,
        },
        {
            "name": f"sampler CPU at {len(ids)} sandboxes, 1 Hz (core share)",
            "value": round(at8["cpu_s_per_s"], 5),
            **at8,
        },
        {
            "name": f"  extrapolated per sandbox to {EMULATED} (core share)",
            "value": round(extrapolated, 4),
            "target": CORE_BUDGET,
            "meets_target": extrapolated <= CORE_BUDGET,
        },
        {
            "name": f"  emulated {len(emulated)} (8 VMs x {copies}), scaled to {EMULATED}",
            "value": round(emulated_100, 4),
            "target": CORE_BUDGET,
            "meets_target": emulated_100 <= CORE_BUDGET,
            **at100,
        },
        {
            "name": "full smaps walk per sandbox per sample (ms CPU)",
            "value": round(full8 / len(targets) * 1000, 3),
            "at_100_emulated_ms": round(full100 / len(emulated) * 1000, 3),
            "core_share_at_100_if_walked_every_second": round(full8 / len(targets) * EMULATED, 3),
        },
        {
            "name": f"event-loop stall, {len(big)} sandboxes walked at 4 Hz: inline (ms)",
            "value": round(stall_inline, 2),
        },
        {
            "name": f"event-loop stall, {len(big)} sandboxes walked at 4 Hz: thread (ms)",
            "value": round(stall_thread, 2),
        },
    ]


def print_summary(results: list[dict[str, Any]]) -> None:
    head = f"{'metering measure':62} {'value':>10} {'target':>8}  ok"
    print(head, file=sys.stderr)
    print("-" * len(head), file=sys.stderr)
    for r in results:
        target = "-" if r.get("target") is None else f"{r['target']:g}"
        ok = {True: "yes", False: "NO", None: "-"}[r.get("meets_target")]
        value = "-" if r.get("value") is None else r["value"]
        print(f"{r['name']:62} {value:>10} {target:>8}  {ok}", file=sys.stderr)
