"""The fleet dashboard's numbers: many hosts in one `grove ui`.

- UI CPU, 4 hosts x 250 sandboxes, metering at 1 Hz on each: `python -m tui --fake
  --fake-hosts 4 --fake-sandboxes 250` on a pseudo-terminal (the fake engines run in the
  same process, so their work counts against the UI), CPU over 20 s after settling, median
  of 3. The same run measures one host of 250 as the baseline, and 3 fake hosts plus the
  real engine (a small idle family on it: real inventory and metering streams).
- Start -> first frame with 4 hosts configured, one of them hung (its connection attempts
  never return): the dashboard must not wait for it.
- A host that hangs: from the moment its engine stops answering to its row saying so, and the
  other hosts' metering rate meanwhile (in-process, headless, real workers and timers).

    python -m bench --only fleet
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

from bench.harness import Series, engine_paths
from bench.tui import (
    CPU_BUDGET,
    CPU_WINDOW_S,
    SETTLE_S,
    PtyChild,
    Seen,
    _env,
    measure_ui_cpu,
    screen_shows,
)
from engine.client import Grove

ENV = "debian:12"
HOSTS = 4
PER_HOST = 250
FIRST_FRAME_TARGET_MS = 1000
SHOWN_WITHIN_S = 5.0
WATCH_S = 10.0


def ui_cpu(hosts: int, per_host: int, rounds: int, engine: Grove | None = None) -> dict[str, Any]:
    """The median of `rounds` runs, each a fresh dashboard; with `engine`, the real engine is
    one more host (its own sandboxes, its real metering and inventory streams)."""
    runs = [_cpu_once(hosts, per_host, engine) for _ in range(rounds)]
    percent = statistics.median(runs)
    real = f" + the real engine ({len(engine.sandboxes())} sandboxes)" if engine else ""
    return {
        "name": f"fleet: UI CPU, {hosts} hosts x {per_host}{real}, 1 Hz (% of a core)",
        "n": rounds,
        "value": round(percent, 2),
        "runs": [round(r, 2) for r in runs],
        "window_s": CPU_WINDOW_S,
        "target": CPU_BUDGET,
        "meets_target": percent <= CPU_BUDGET,
    }


def _cpu_once(hosts: int, per_host: int, engine: Grove | None) -> float:
    argv = [sys.executable, "-m", "tui", "--fake", "--fake-hosts", str(hosts),
            "--fake-sandboxes", str(per_host)]  # fmt: skip
    env = _env()
    if engine is not None:
        argv.append("--with-engine")
        env["GROVE_HOME"] = str(engine_paths(engine).home)
    return measure_ui_cpu(argv, env, ("box-000", "palette"), SETTLE_S * 2)[0]


def first_frame(rounds: int) -> Series:
    series = Series("fleet: start -> first frame, 4 hosts, 1 hung", target_ms=FIRST_FRAME_TARGET_MS)
    argv = [sys.executable, "-m", "tui", "--fake", "--fake-hosts", "3", "--fake-hung", "1"]
    for _ in range(rounds):
        child = PtyChild(argv, _env())
        frame = Seen(child, screen_shows("lineage", "metering", "palette"))
        try:
            series.add((frame.wait(30, "the first frame", child) - child.started) * 1000)
        finally:
            child.stop()
    return series


async def _hung_host(rounds: int) -> tuple[list[float], list[float]]:
    from tui.app import GroveApp
    from tui.engine.fake import fake_fleet
    from tui.state import Link

    shown: list[float] = []
    rates: list[float] = []
    for _ in range(rounds):
        hosts = fake_fleet(HOSTS, PER_HOST, now=time.time(), live_interval=1.0)
        app = GroveApp(hosts, user_themes=False, meter_interval=1.0)  # type: ignore[arg-type]
        async with app.run_test(size=(140, 40)) as pilot:
            state = app.state
            deadline = time.monotonic() + 60
            while not all(h.meters.samples > 60 for h in state.hosts.values()):
                if time.monotonic() > deadline:
                    raise RuntimeError("the fleet never loaded")
                await pilot.pause(0.1)
            victim, others = "host-4", [h for h in state.hosts if h != "host-4"]
            counts = {h: state.hosts[h].meters.samples for h in others}
            hosts[victim].hang = True
            hung_at = time.monotonic()
            while state.hosts[victim].link is Link.CONNECTED:
                if time.monotonic() - hung_at > 30:
                    raise RuntimeError("the hung host was never shown")
                await pilot.pause(0.05)
            shown.append(time.monotonic() - hung_at)
            await asyncio.sleep(max(0.0, WATCH_S - (time.monotonic() - hung_at)))
            elapsed = time.monotonic() - hung_at
            rates.append(min((state.hosts[h].meters.samples - counts[h]) / elapsed
                             for h in others))  # fmt: skip
    return shown, rates


def hung_host(rounds: int) -> list[dict[str, Any]]:
    shown, rates = asyncio.run(_hung_host(rounds))
    shown_p50 = statistics.median(shown)
    rate_p50 = statistics.median(rates)
    return [
        {
            "name": "fleet: a hung host shown as lost (s)",
            "n": len(shown),
            "value_s": round(shown_p50, 2),
            "target_s": SHOWN_WITHIN_S,
            "meets_target": shown_p50 <= SHOWN_WITHIN_S,
        },
        {
            "name": "fleet: other hosts' metering meanwhile (samples/s, slowest host)",
            "n": len(rates),
            "value_hz": round(rate_p50, 2),
            "target_hz": 0.9,
            "meets_target": rate_p50 >= 0.9,
        },
    ]


def run(client: Grove, rounds: int) -> list[dict[str, Any]]:
    cpu_rounds = max(1, min(rounds, 3))
    results = [ui_cpu(1, PER_HOST, cpu_rounds), ui_cpu(HOSTS, PER_HOST, cpu_rounds)]
    # One real host in the same run: the engine with a small family of idle sandboxes.
    made = [client.create(ENV).id for _ in range(2)]
    made += [c.id for c in client.fork(made[0], replicas=4).children]
    try:
        results.append(ui_cpu(HOSTS - 1, PER_HOST, cpu_rounds, engine=client))
    finally:
        for sandbox_id in made:
            client.terminate(sandbox_id)
    results.append(first_frame(max(3, min(rounds, 10))).summary())
    results += hung_host(max(1, min(rounds, 3)))
    return results


def print_summary(results: list[dict[str, Any]]) -> None:
    head = f"{'fleet measure':80} {'n':>3} {'p50':>10} {'target':>9}  ok"
    print(head, file=sys.stderr)
    print("-" * len(head), file=sys.stderr)
    for r in results:
        ok = {True: "yes", False: "NO", None: "-"}[r.get("meets_target")]
        if "value" in r:
            p50, target = f"{r['value']:.1f}%", f"≤{r['target']:g}%"
        elif "value_s" in r:
            p50, target = f"{r['value_s']:.2f} s", f"≤{r['target_s']:g} s"
        elif "value_hz" in r:
            p50, target = f"{r['value_hz']:.2f}/s", f"≥{r['target_hz']:g}/s"
        else:
            p50 = "-" if r.get("p50_ms") is None else f"{r['p50_ms']:.0f} ms"
            target = f"≤{r['target_ms']:g} ms"
        print(f"{r['name']:80} {r.get('n', 1):>3} {p50:>10} {target:>9}  {ok}", file=sys.stderr)
