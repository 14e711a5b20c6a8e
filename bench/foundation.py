"""Engine foundation numbers: cold boot, create-to-first-exec, agent and exec round trips,
terminate. Everything goes through the real API over the engine's unix socket."""

from __future__ import annotations

import time
from typing import Any

from bench.harness import Series, timed
from engine.client import Grove

ENV = "debian:12"
POOL_REFILL_S = 6.0  # > the engine's wait before it warms the next restore, plus its warm-up


def exec_true(client: Grove, sandbox: str) -> int:
    return client.exec(sandbox, ["true"]).exit_code


def run(client: Grove, rounds: int) -> list[dict[str, Any]]:
    # First create in a fresh home boots the environment once and freezes it as a template.
    template_ms, first = timed(lambda: client.create(ENV))
    client.terminate(first.id)

    create = Series("sandbox create -> first exec answered", target_ms=150)
    burst = Series("  same, back-to-back (warm pool still refilling)")
    create_engine = Series("sandbox create (engine-side, to agent ready)")
    ping = Series("agent round trip (ping, engine<->guest)", target_ms=1)
    exec_rt = Series("exec true round trip (client->guest->client)")
    terminate = Series("terminate", target_ms=100)
    cold = Series("cold boot to agent ready (sandbox start)")

    ids: list[str] = []
    for _ in range(rounds):
        # As a person creates sandboxes: the engine's warm restore is ready by then.
        time.sleep(POOL_REFILL_S)
        started = time.perf_counter()
        sandbox = client.create(ENV)
        assert exec_true(client, sandbox.id) == 0
        create.add((time.perf_counter() - started) * 1000)
        if sandbox.create_ms is not None:
            create_engine.add(sandbox.create_ms)
        ids.append(sandbox.id)
    for _ in range(rounds):
        started = time.perf_counter()
        sandbox = client.create(ENV)
        assert exec_true(client, sandbox.id) == 0
        burst.add((time.perf_counter() - started) * 1000)
        ms, _ = timed(lambda: client.terminate(sandbox.id))  # noqa: B023
        terminate.add(ms)
    probe = ids[0]
    for _ in range(200):
        ping.add(client.ping(probe))
    for _ in range(rounds * 3):
        ms, code = timed(lambda: exec_true(client, probe))
        assert code == 0
        exec_rt.add(ms)
    for _ in range(min(3, rounds)):
        client.stop(probe)
        ms, _ = timed(lambda: client.start(probe))
        assert exec_true(client, probe) == 0
        cold.add(ms)
    for sandbox_id in ids:
        ms, _ = timed(lambda: client.terminate(sandbox_id))  # noqa: B023
        terminate.add(ms)
    template = Series("first create in a fresh home (template boot)")
    template.add(template_ms)
    results = [s.summary() for s in (template, cold, create, burst, create_engine, ping,
                                     exec_rt, terminate)]  # fmt: skip
    boot = cold.summary()["p50_ms"]
    fork_like = create.summary()["p50_ms"]
    if boot and fork_like:
        results.append({"name": "cold boot / create (speed-up, same run)",
                        "ratio": round(boot / fork_like, 1)})  # fmt: skip
    return results
