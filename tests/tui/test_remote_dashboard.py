"""The dashboard through SSH: a Pilot drives `grove ui --host ssh://...` against the second
real engine behind a real OpenSSH server (the `remote` fixture), as an operator watching a
KVM server from their own machine would."""

from __future__ import annotations

import json

import pytest
from conftest import SIZE, wait_for
from sshd import Remote

from engine.config import Paths
from tui.app import GroveApp
from tui.engine.grpc_gateway import GrpcGateway
from tui.screens.main import MainScreen
from tui.widgets.bars import EngineHeader

pytestmark = pytest.mark.vm


async def test_dashboard_lists_and_meters_a_remote_engine(
    remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = json.loads(remote.ok("sandbox", "create", "debian:12", "--name", "over-ssh",
                               "--json"))["id"]  # fmt: skip
    monkeypatch.setenv("HOME", str(remote.sshd.home))  # the client's ~/.ssh
    gateway = GrpcGateway(Paths(remote.local.home), host=remote.url)
    app = GroveApp(gateway, user_themes=False)
    app.animation_level = "none"
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), what="main screen")
            screen = app.screen
            assert isinstance(screen, MainScreen)
            host = screen.state.hosts["local"]  # one gateway: the dashboard's only host
            await wait_for(pilot, lambda: sid in host.sandboxes, timeout=60,
                           what="the remote sandbox in the inventory")  # fmt: skip
            header = str(app.screen.query_one(EngineHeader).render())
            assert f"127.0.0.1:{remote.sshd.port}" in header, header
            # Metering arrives from the far engine too.
            await wait_for(pilot, lambda: len(host.meters.memory(sid)) >= 2, timeout=30,
                           what="metering samples of the remote sandbox")  # fmt: skip
            errors = [n.message for n in app._notifications if n.severity == "error"]
            assert not errors, errors
    finally:
        await gateway.close()
        remote.ok("sandbox", "terminate", sid)


async def test_demo_runs_on_a_remote_host(remote: Remote, monkeypatch: pytest.MonkeyPatch) -> None:
    """`grove ui --demo --host ...`: the tour (pull, create, a service, forks, a shell) on the
    far engine, and `q` then quits with status 0."""
    before = {s["id"] for s in json.loads(remote.ok("sandbox", "ls", "--json"))}
    monkeypatch.setenv("HOME", str(remote.sshd.home))
    gateway = GrpcGateway(Paths(remote.local.home), host=remote.url)
    app = GroveApp({"lab": gateway}, user_themes=False, demo=True)
    app.animation_level = "none"
    made: set[str] = set()

    def outcome() -> str | None:
        for note in app._notifications:
            if note.title == "Demo ready":
                return ""
            if note.severity == "error":
                return f"{note.title}: {note.message}"
        return None

    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: outcome() is not None, timeout=600, what="the tour")
            assert outcome() == "", outcome()
            host = app.state.hosts["lab"]
            made = set(host.sandboxes) - before
            names = {host.sandboxes[i].name for i in made}
            assert {"web", "web-fork-1", "web-fork-2", "web-fork-1-1"} <= names, names
            await pilot.press("ctrl+right_square_bracket")  # out of the demo's shell
            await pilot.press("q")
            await wait_for(pilot, lambda: not app.is_running, what="the dashboard to quit")
        assert app.return_code == 0
    finally:
        await gateway.close()
        for sandbox_id in made:
            remote.cli("sandbox", "terminate", sandbox_id)
