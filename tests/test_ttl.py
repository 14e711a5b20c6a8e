"""TTL auto-cleanup: the reaper terminates a sandbox on time (its `expired` event, then the
terminate), a cleared TTL never fires, a TTL that ran out while the engine was dead is reaped
when the next engine starts, and a fork parent's expiry leaves its children running and in
the tree. Bad durations fail before any engine call.

The VM tests share the session engine and create few sandboxes (each one costs seconds
under TCG); the accuracy each expiry reached is printed (run with -s to see it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ENV, REPO, Grove, exited
from waiting import wait_for

#: The reaper's promise: within this of expires_at (the tests allow for a loaded machine).
ACCURACY_S = 1.0


def _sandbox(grove: Grove, sid: str) -> dict[str, Any]:
    listed = grove.ok("ps", "--all", "--json").json()
    assert isinstance(listed, list)
    found = [s for s in listed if s["id"] == sid]
    assert found, f"{sid} is not listed"
    return dict(found[0])


def _events(grove: Grove, sid: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in grove.ok("logs", sid, "--json").out.splitlines()]


def _wait_terminated(grove: Grove, sid: str, expires_at: float) -> dict[str, Any]:
    timeout = max(0.0, expires_at - time.time()) + 30
    return wait_for(lambda: _sandbox(grove, sid), timeout, f"{sid} to be reaped",
                    ready=lambda s: s["phase"] == "terminated", interval=0.25)  # fmt: skip


def _expired_event(grove: Grove, sid: str, expires_at: float) -> dict[str, Any]:
    events = _events(grove, sid)
    kinds = [e["kind"] for e in events]
    assert "expired" in kinds and "terminated" in kinds, kinds
    assert kinds.index("expired") < kinds.index("terminated"), kinds
    expired = events[kinds.index("expired")]
    assert expired["detail"]["expires_at"] == pytest.approx(expires_at)
    return expired


def _nodes(roots: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for node in roots:
        yield node
        yield from _nodes(node["children"])


# -- on real VMs ----------------------------------------------------------------------------


def test_expires_on_time_and_a_cleared_ttl_does_not(grove: Grove) -> None:
    doomed = grove.ok("sandbox", "create", ENV, "--ttl", "8s", "--json").json()
    kept = grove.ok("sandbox", "create", ENV, "--ttl", "8s", "--json").json()
    assert isinstance(doomed, dict) and isinstance(kept, dict)
    assert doomed["expires_at"] == pytest.approx(time.time() + 8, abs=8)
    first_expiry = kept["expires_at"]
    assert first_expiry is not None
    longer = grove.ok("sandbox", "ttl", kept["id"], "2h", "--json").json()
    assert isinstance(longer, dict) and longer["expires_at"] == pytest.approx(
        time.time() + 7200, abs=5
    )
    said = grove.ok("sandbox", "ttl", kept["id"], "2h").out
    assert re.search(r"expires in (2h00m|1h59m) \(at ", said), said
    cleared = grove.ok("sandbox", "ttl", kept["id"], "--clear", "--json").json()
    assert isinstance(cleared, dict) and cleared["expires_at"] is None
    assert grove.ok("sandbox", "ttl", kept["id"], "--clear").out.strip().endswith("never expires")
    listing = grove.ok("sandbox", "ls").out.splitlines()
    assert "EXPIRES IN" in listing[0]
    assert any(kept["id"] in line and "never" in line.split() for line in listing), listing

    gone = _wait_terminated(grove, doomed["id"], doomed["expires_at"])
    expired = _expired_event(grove, doomed["id"], doomed["expires_at"])
    late = expired["ts"] - doomed["expires_at"]
    print(f"\n[ttl] expired event {late * 1000:.0f} ms after expires_at "
          f"(engine: late_ms={expired['detail']['late_ms']})")  # fmt: skip
    assert -0.05 <= late <= ACCURACY_S, late
    assert gone["pid"] is None
    wait_for(lambda: exited(doomed["pid"]), 10, f"QEMU {doomed['pid']} to exit", interval=0.05)

    # Past the time the cleared TTL named (and then some): still running, and still answers.
    time.sleep(max(0.0, first_expiry + 1.5 - time.time()))
    assert _sandbox(grove, kept["id"])["phase"] == "running"
    assert "expired" not in [e["kind"] for e in _events(grove, kept["id"])]
    grove.ok("sandbox", "exec", kept["id"], "--", "true")
    grove.ok("sandbox", "terminate", kept["id"])


def test_expired_while_the_engine_was_dead_is_reaped_at_start(grove: Grove) -> None:
    sandbox = grove.ok("sandbox", "create", ENV, "--ttl", "4s", "--json").json()
    assert isinstance(sandbox, dict)
    engine = grove.engine_pid()
    assert engine is not None
    os.kill(engine, signal.SIGKILL)
    wait_for(lambda: exited(engine), 30, f"the killed engine {engine} to exit", interval=0.05)
    time.sleep(max(0.0, sandbox["expires_at"] + 1.0 - time.time()))
    assert not exited(sandbox["pid"]), "the VM outlives its engine; the next one must reap it"

    # The next CLI call starts an engine, which reaps it before serving.
    after = _sandbox(grove, sandbox["id"])
    assert grove.engine_pid() not in (None, engine)
    assert after["phase"] == "terminated" and after["pid"] is None
    expired = _expired_event(grove, sandbox["id"], sandbox["expires_at"])
    assert expired["detail"]["late_ms"] >= 1000  # it was due while nobody could reap it
    wait_for(lambda: exited(sandbox["pid"]), 10, f"QEMU {sandbox['pid']} to exit", interval=0.05)


def test_fork_parent_expires_and_its_children_live_on(grove: Grove) -> None:
    parent = grove.ok("sandbox", "create", ENV).out.strip()
    assert _sandbox(grove, parent)["expires_at"] is None  # no default TTL in the tests
    grove.ok("sandbox", "exec", parent, "--", "sh", "-c", "echo from-parent > /root/f")
    with_ttl = grove.ok("sandbox", "fork", parent, "--ttl", "30m", "--json").json()
    without = grove.ok("sandbox", "fork", parent, "--json").json()
    assert isinstance(with_ttl, dict) and isinstance(without, dict)
    [timed] = with_ttl["children"]
    [plain] = without["children"]
    assert _sandbox(grove, timed["id"])["expires_at"] == pytest.approx(time.time() + 1800, abs=30)
    assert _sandbox(grove, plain["id"])["expires_at"] is None

    expires_at = grove.ok("sandbox", "ttl", parent, "2s", "--json").json()["expires_at"]  # type: ignore[call-overload, index]
    _wait_terminated(grove, parent, expires_at)
    _expired_event(grove, parent, expires_at)
    for child in (timed["id"], plain["id"]):
        listed = _sandbox(grove, child)
        assert listed["phase"] == "running" and listed["parent_id"] == parent
        out = grove.ok("sandbox", "exec", child, "--", "cat", "/root/f").out
        assert out == "from-parent\n"
    roots = grove.ok("tree", "--json").json()
    assert isinstance(roots, list)
    nodes = {n["id"]: n for n in _nodes(roots)}
    assert parent not in nodes  # terminated: not drawn; its children surface as roots
    assert {timed["id"], plain["id"]} <= {r["id"] for r in roots}
    assert nodes[timed["id"]]["expires_at"] == pytest.approx(time.time() + 1800, abs=30)
    assert nodes[plain["id"]]["expires_at"] is None
    text = grove.ok("tree").out
    assert "expires in 29m" in text or "expires in 30m" in text, text
    assert "expires never" in text
    for child in (timed["id"], plain["id"]):
        grove.ok("sandbox", "terminate", child)


# -- before any engine call -----------------------------------------------------------------


@pytest.fixture
def offline(tmp_path: Path) -> Grove:
    """The CLI with no engine it could reach or start: what fails here made no call."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROVE_")}
    env.update(GROVE_HOME="/proc/grove-cannot-exist", PYTHONPATH=str(REPO),
               XDG_CONFIG_HOME=str(tmp_path / "config"))  # fmt: skip
    return Grove(tmp_path, env)


@pytest.mark.parametrize(
    "args",
    [
        ("sandbox", "create", ENV, "--ttl", "10x"),
        ("sandbox", "create", "--from-snapshot", "base", "--ttl", "1h3"),
        ("run", ENV, "--ttl=-5m", "--", "true"),
        ("sandbox", "fork", "sb-00000000", "--ttl", "400d"),
        ("sandbox", "ttl", "sb-00000000", "10x"),
        ("sandbox", "ttl", "sb-00000000", "0"),
        ("sandbox", "ttl", "sb-00000000"),
        ("sandbox", "ttl", "sb-00000000", "5m", "--clear"),
    ],
    ids=["create", "from-snapshot", "run", "fork", "ttl", "ttl-zero", "ttl-none", "ttl-both"],
)
def test_bad_durations_fail_before_anything_is_created(
    offline: Grove, args: tuple[str, ...]
) -> None:
    cut = args.index("--") if "--" in args else len(args)
    as_json = offline.run(*args[:cut], "--json", *args[cut:])
    assert as_json.code != 0
    data = as_json.json()
    assert isinstance(data, dict) and set(data) == {"error"}
    error = data["error"]
    assert set(error) == {"code", "message", "remedy"} and error["message"] and error["remedy"]
    assert error["code"] == "invalid_argument", error  # not engine_unreachable: no call made
    human = offline.run(*args)
    assert human.code == (125 if args[0] == "run" else 1)
    lines = human.err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: "), human.err  # one line of cause
    assert lines[1].strip().startswith("remedy: ") and "Traceback" not in human.err


def test_a_bad_default_ttl_stops_the_engine_at_start() -> None:
    home = Path(tempfile.mkdtemp(prefix="gt", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROVE_")}
    env.update(GROVE_HOME=str(home), GROVE_MEM_DIR=str(home / "memory"), PYTHONPATH=str(REPO),
               XDG_CONFIG_HOME=str(home / "config"), GROVE_DEFAULT_TTL="10x")  # fmt: skip
    grove = Grove(home, env)
    try:
        result = grove.run("engine", "start", timeout=60)
        assert result.code != 0
        assert "GROVE_DEFAULT_TTL" in result.err and "10x" in result.err, result.err
        assert "Traceback" not in result.err
        assert grove.engine_pid() is None and not (home / "engine.sock").exists()
    finally:
        shutil.rmtree(home, ignore_errors=True)
