"""Snapshot-fork numbers: fork to first exec, fork of a fork, 8-way fan-out, source pause,
the speed-up over a cold boot measured in the same run, and idle children's private memory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.foundation import ENV, exec_true
from bench.harness import Series, timed
from engine.client import ForkResult, Grove


def guest_private_kib(pid: int, mem_path: str) -> int | None:
    """CoW copies a VM owns: Anonymous kB inside its guest-RAM mapping."""
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return None
    inside = False
    for line in text.splitlines():
        if line and not line[0].isupper():
            inside = line.rstrip().endswith(mem_path)
        elif inside and line.startswith("Anonymous:"):
            return int(line.split()[1])
    return None


def fork_and_answer(client: Grove, source: str, replicas: int = 1) -> tuple[float, ForkResult]:
    started = time.perf_counter()
    reply = client.fork(source, replicas=replicas)
    for child in reply.children:
        assert exec_true(client, child.id) == 0
    return (time.perf_counter() - started) * 1000, reply


def run(client: Grove, rounds: int) -> list[dict[str, Any]]:
    source = client.create(ENV)
    one = Series("fork -> child's first exec answered", target_ms=150)
    paused = Series("source paused during fork", target_ms=150)
    grand = Series("fork of a fork -> grandchild answering", target_ms=400)
    fan = Series("fork 8 children, all answering (wall)", target_ms=1200)
    cold = Series("cold boot to agent ready (same run)")
    # Where a fork's milliseconds go: the RPC (capture + the child's restore), then the
    # child's first command, which under TCG pays for translating guest code in a fresh
    # QEMU, against its second (the same command, translated already).
    rpc = Series("  fork RPC (capture + child restored)")
    first = Series("  child's first exec after the RPC")
    second = Series("  child's second exec (warm)")
    made: list[str] = []
    for _ in range(rounds):
        started = time.perf_counter()
        reply = client.fork(source.id, replicas=1)
        forked = time.perf_counter()
        child = reply.children[0].id
        assert exec_true(client, child) == 0
        answered = time.perf_counter()
        one.add((answered - started) * 1000)
        rpc.add((forked - started) * 1000)
        first.add((answered - forked) * 1000)
        ms, code = timed(lambda: exec_true(client, child))  # noqa: B023
        assert code == 0
        second.add(ms)
        paused.add(reply.paused_ms)
        made.append(child)
        ms, reply = fork_and_answer(client, child)
        grand.add(ms)
        made.append(reply.children[0].id)
        for sandbox_id in made:
            client.terminate(sandbox_id)
        made.clear()
    private: list[int] = []
    for _ in range(max(1, rounds // 3)):
        ms, reply = fork_and_answer(client, source.id, replicas=8)
        fan.add(ms)
        time.sleep(3)  # idle children settle
        pids = {s.id: s.pid for s in client.sandboxes()}
        mem = next((str(p) for p in Path("/dev/shm").glob(f"grove-*/{reply.snapshot}.mem")), "")
        for kid in reply.children:
            pid = pids.get(kid.id)
            kib = guest_private_kib(pid, mem) if mem and pid is not None else None
            if kib is not None:
                private.append(kib)
            client.terminate(kid.id)
    client.stop(source.id)
    for _ in range(2):
        ms, _ = timed(lambda: client.start(source.id))
        cold.add(ms)
        client.stop(source.id)
    client.terminate(source.id)
    results = [s.summary() for s in (one, rpc, first, second, paused, grand, fan, cold)]
    boot, forked = cold.summary()["p50_ms"], one.summary()["p50_ms"]
    results.append({
        "name": "fork speed-up over cold boot (target >= 20x)",
        "ratio": round(boot / forked, 1) if boot and forked else None,
        "meets_target": (boot / forked >= 20) if boot and forked else None,
    })  # fmt: skip
    private.sort()
    results.append({
        "name": "idle child private guest memory (MiB, p50)",
        "n": len(private),
        "p50_ms": round(private[len(private) // 2] / 1024, 2) if private else None,
        "target_ms": 3,
        "meets_target": (private[len(private) // 2] / 1024 <= 3) if private else None,
        "unit": "MiB",
    })  # fmt: skip
    return results
