"""A fleet of two real engines in one dashboard: a private local engine and the remote one
behind the real OpenSSH server on 127.0.0.1. The local engine is killed with SIGKILL while
the dashboard runs: its host shows as lost within seconds, the remote host's metering goes
on meanwhile, and once the engine is started again the host comes back with its sandbox."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest
from conftest import SIZE, wait_for
from sshd import Remote

from engine.config import Paths
from tui.app import GroveApp
from tui.engine.grpc_gateway import GrpcGateway
from tui.screens.main import MainScreen
from tui.state import Link, join

pytestmark = pytest.mark.vm


async def test_two_real_hosts_one_killed_and_back(
    fresh_grove: object, remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = fresh_grove
    g.ok("env", "pull", "debian:12", timeout=900)  # type: ignore[attr-defined]
    here = json.loads(g.ok("sandbox", "create", "debian:12", "--name", "fleet-here",  # type: ignore[attr-defined]
                           "--json").out)["id"]  # fmt: skip
    there = json.loads(remote.ok("sandbox", "create", "debian:12", "--name", "fleet-there",
                                 "--json"))["id"]  # fmt: skip
    monkeypatch.setenv("HOME", str(remote.sshd.home))  # the client's ~/.ssh
    gateways = {
        "here": GrpcGateway(Paths(g.home), autostart=False),  # type: ignore[attr-defined]
        "there": GrpcGateway(Paths(remote.local.home), host=remote.url),
    }
    app = GroveApp(gateways, user_themes=False, meter_interval=0.5)  # type: ignore[arg-type]
    app.animation_level = "none"
    state = app.state
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), what="screen")
            await wait_for(pilot, lambda: state.sandbox(join("here", here)) is not None
                           and state.sandbox(join("there", there)) is not None, timeout=60,
                           what="both hosts' sandboxes")  # fmt: skip
            assert {h.link for h in state.hosts.values()} == {Link.CONNECTED}
            await wait_for(pilot, lambda: len(state.hosts["there"].meters.memory(there)) >= 2,
                           timeout=30, what="remote metering")  # fmt: skip

            pid = g.engine_pid()  # type: ignore[attr-defined]
            assert pid is not None
            loop = asyncio.get_running_loop()
            os.kill(pid, signal.SIGKILL)
            killed_at = loop.time()
            await wait_for(pilot, lambda: not state.hosts["here"].connected, timeout=10,
                           what="the killed host shown as lost")  # fmt: skip
            assert loop.time() - killed_at <= 5, "a dead host must show within 5 s"
            assert state.hosts["here"].error is not None
            # The other host is not held up: its samples keep coming.
            samples = state.hosts["there"].meters.samples
            await wait_for(pilot, lambda: state.hosts["there"].meters.samples >= samples + 3,
                           timeout=15, what="remote metering meanwhile")  # fmt: skip
            assert state.hosts["there"].connected
            # The dashboard does not restart an engine that died; the operator does.
            g.ok("engine", "start", timeout=120)  # type: ignore[attr-defined]
            app.screen.controller.reconnect()  # type: ignore[attr-defined]
            await wait_for(pilot, lambda: state.hosts["here"].connected, timeout=60,
                           what="the host back after its engine restarted")  # fmt: skip
            await wait_for(pilot, lambda: state.sandbox(join("here", here)) is not None,
                           timeout=30, what="its sandbox listed again")  # fmt: skip
            errors = [n.message for n in app._notifications if n.severity == "error"
                      and "here" not in (n.title or "")]  # fmt: skip
            assert not errors, errors
    finally:
        for gateway in gateways.values():
            await gateway.close()
        remote.ok("sandbox", "terminate", there)
