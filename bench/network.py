"""Network numbers: what a namespace adds to create and fork, how fast a policy change
applies, and TAP against user-mode networking from a guest to a server in a test namespace.

Two private engines run side by side, warm pools off so every create pays its own setup:
one with namespaces (TAP), one with user-mode networking (GROVE_NETWORK_BACKEND=user). Their
difference in engine-side create time is what network setup costs. The server is in a network
namespace this benchmark makes (bench.networld); no traffic leaves this machine.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.foundation import ENV
from bench.harness import Series, engine_with
from bench.networld import PORT, World, world
from engine.client import Grove

THROUGHPUT_MB = 16
ROUND_TRIPS = 200

#: Guest side: PORT+1 gets THROUGHPUT_MB MiB (MB/s printed); PORT gets ROUND_TRIPS line/ack
#: round trips on one connection (median microseconds printed).
GUEST_MEASURE = r"""
import socket, statistics, sys, time
host, port, mib, trips = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
block = b"x" * (1 << 16)
s = socket.create_connection((host, port + 1), timeout=30)
t = time.perf_counter()
for _ in range(mib * 16):
    s.sendall(block)
s.shutdown(socket.SHUT_WR)
total = int(s.recv(100))
mbps = total / (time.perf_counter() - t) / 1e6
s = socket.create_connection((host, port), timeout=30)
f = s.makefile("rb")
f.readline()
rtts = []
for i in range(trips):
    t = time.perf_counter()
    s.sendall(b"ping\n")
    f.readline()
    rtts.append((time.perf_counter() - t) * 1e6)
print(f"{mbps:.2f} {statistics.median(rtts):.0f}")
"""


def _create_ms(client: Grove, rounds: int, network: str) -> tuple[Series, Series]:
    creates = Series(f"create ({client.status().network_backend}), engine side")
    children = Series(f"fork child ({client.status().network_backend}), engine side")
    made: list[str] = []
    for _ in range(rounds):
        sandbox = client.create(ENV, network=network)
        made.append(sandbox.id)
        creates.add(float(sandbox.create_ms or 0.0))
    for _ in range(max(3, rounds // 2)):
        forked = client.fork(made[0])
        for child in forked.children:
            made.append(child.id)
            children.add(float(child.create_ms or 0.0))
    for sid in made:
        client.terminate(sid)
    return creates, children


def _guest_numbers(client: Grove, target: World) -> tuple[float, float]:
    sandbox = client.create(ENV, network="egress")
    try:
        argv = ["python3", "-c", GUEST_MEASURE, target.address, str(PORT),
                str(THROUGHPUT_MB), str(ROUND_TRIPS)]  # fmt: skip
        result = client.exec(sandbox.id, argv, timeout_s=600)
        if result.exit_code != 0:
            raise RuntimeError(f"guest measure failed: {result.stderr!r}")
        mbps, rtt_us = result.stdout.decode().split()
        return float(mbps), float(rtt_us)
    finally:
        client.terminate(sandbox.id)


def _policy_changes(client: Grove, rounds: int) -> tuple[Series, Series]:
    applied = Series("policy change applied (engine side)", target_ms=50)
    rpc = Series("  policy change, RPC round trip")
    sandbox = client.create(ENV, network="published")
    try:
        for i in range(max(rounds, 10)):
            policy = "egress" if i % 2 == 0 else "published"
            started = time.perf_counter()
            info = client.network(sandbox.id, policy)
            rpc.add((time.perf_counter() - started) * 1000)
            assert info.applied_ms is not None
            applied.add(info.applied_ms)
    finally:
        client.terminate(sandbox.id)
    return applied, rpc


def _setup_alone(rounds: int) -> tuple[Series, Series]:
    """The engine's own code making and removing a namespace network, timed in-process."""
    import asyncio

    from engine.config import Paths
    from engine.net.networks import Networks
    from engine.net.policy import EGRESS
    from engine.store.db import Store

    made = Series("  namespace network made (alone, in-process)", target_ms=20)
    removed = Series("  namespace network removed (alone, in-process)")

    async def measure(paths: Paths) -> None:
        networks = Networks(paths, Store(paths.database))
        for i in range(max(rounds, 10)):
            started = time.perf_counter()
            net = await networks.attach(f"bench-{i}", EGRESS)
            made.add((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await net.close()
            removed.add((time.perf_counter() - started) * 1000)
        await networks.close()

    with tempfile.TemporaryDirectory(prefix="gbns", dir="/tmp") as home:
        paths = Paths(Path(home))
        paths.ensure()
        asyncio.run(measure(paths))
    return made, removed


def run(image_cache: Path, rounds: int) -> list[dict[str, Any]]:
    quiet = {"GROVE_POOL_SIZE": "0", "GROVE_WARM_LOADERS": "0"}
    with tempfile.TemporaryDirectory(prefix="gbnet") as tmp, world(Path(tmp), 0) as target:
        with engine_with(image_cache, **quiet, GROVE_NETWORK_BACKEND="namespace") as tap:
            tap_create, tap_child = _create_ms(tap, rounds, "egress")
            applied, rpc = _policy_changes(tap, rounds)
            tap_mbps, tap_rtt = _guest_numbers(tap, target)
        with engine_with(image_cache, **quiet, GROVE_NETWORK_BACKEND="user") as user:
            user_create, user_child = _create_ms(user, rounds, "egress")
            user_mbps, user_rtt = _guest_numbers(user, target)
    results = [s.summary() for s in (tap_create, user_create, tap_child, user_child)]
    for name, ns, base in (
        ("network setup added to create (p50 difference)", tap_create, user_create),
        ("network setup added to a fork child (p50 diff.)", tap_child, user_child),
    ):
        added = statistics.median(ns.samples) - statistics.median(base.samples)
        results.append({
            "name": name, "n": len(ns.samples), "p50_ms": round(added, 2), "target_ms": 20,
            "meets_target": added <= 20,
        })  # fmt: skip
    made, removed = _setup_alone(rounds)
    results += [made.summary(), removed.summary(), applied.summary(), rpc.summary()]
    results.append({
        "name": "guest -> test namespace, TAP vs user-mode",
        "tap_mb_per_s": tap_mbps, "user_mb_per_s": user_mbps,
        "throughput_ratio": round(tap_mbps / user_mbps, 2) if user_mbps else None,
        "tap_rtt_us": tap_rtt, "user_rtt_us": user_rtt,
        "rtt_ratio": round(user_rtt / tap_rtt, 2) if tap_rtt else None,
        "meets_target": tap_mbps >= user_mbps and tap_rtt <= user_rtt,
    })  # fmt: skip
    return results


def print_summary(results: list[dict[str, Any]]) -> None:
    timed = [r for r in results if "p50_ms" in r]
    from bench.harness import print_table

    print_table(timed)
    for r in results:
        if "tap_mb_per_s" in r:
            print(
                f"\nguest -> server in a test namespace: TAP {r['tap_mb_per_s']:.1f} MB/s, "
                f"{r['tap_rtt_us']:.0f} us RTT; user-mode {r['user_mb_per_s']:.1f} MB/s, "
                f"{r['user_rtt_us']:.0f} us RTT (throughput x{r['throughput_ratio']}, "
                f"latency x{r['rtt_ratio']})",
                file=sys.stderr,
            )
