"""The engine killed at every named crash point, and at random moments, leaks nothing.

After each kill a new engine starts and must leave: every sandbox either running and answering
or gone with its files (or, for an interrupted stop/start, stopped with its disk); no QEMU, memory
file, disk layer, socket directory or sandbox directory that no record claims; every fork source
running again. Warm pools are off in the checking engines, so every QEMU must be a sandbox's.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import ENV, Grove, make_grove, teardown_grove

from engine.config import Paths
from engine.crashpoints import POINTS
from engine.net.slots import home_tag

pytestmark = pytest.mark.vm

TRANSITIONAL = {"creating", "starting", "stopping", "resetting", "terminating"}
QUIET = {"GROVE_POOL_SIZE": "0", "GROVE_WARM_LOADERS": "0"}


@dataclass
class Home:
    grove: Grove
    source: str = ""
    # sandbox id -> the phase a case expects it in after recovery (beyond "running")
    expected: dict[str, set[str]] = field(default_factory=dict)

    def cli(self, *args: str, crash: str = "", pool: bool = False, timeout: float = 300) -> Any:
        env = {**self.grove.env, **QUIET}
        if pool:
            env["GROVE_POOL_SIZE"] = "1"
        if crash:
            env["GROVE_CRASH_AT"] = crash
        return Grove(self.grove.home, env).run(*args, timeout=timeout)

    def ok(self, *args: str) -> Any:
        result = self.cli(*args)
        assert result.code == 0, f"grove {' '.join(args)} failed: {result.err or result.out}"
        return result

    def listed(self) -> dict[str, dict[str, Any]]:
        data = self.ok("ps", "--json").json()
        assert isinstance(data, list)
        return {s["id"]: s for s in data}


@pytest.fixture(scope="module")
def home() -> Iterator[Home]:
    g = make_grove("gc")
    h = Home(g)
    yield h
    h.cli("ps")  # a case that failed may have left its engine dead: adopt, then stop
    teardown_grove(g)


def kill_engine(g: Grove) -> None:
    pid = g.engine_pid()
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        wait_gone(pid)


def wait_gone(pid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}"), f"engine {pid} still alive after {timeout} s"


def wait_crash(g: Grove, point: str, timeout: float = 120) -> None:
    """The engine died at point: its log says so and its process is gone."""
    marker = f"crash point {point} reached"
    deadline = time.monotonic() + timeout
    log = g.home / "engine.log"
    while time.monotonic() < deadline:
        if marker in log.read_text(errors="replace") and g.engine_pid() is None:
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace").splitlines()[-5:]
    raise AssertionError(f"engine never reached {point}; log ends: {tail}")


def claimed(g: Grove) -> tuple[set[str], set[str]]:
    """(files the store claims, ids of sandboxes not terminated), read from the database."""
    db = sqlite3.connect(f"file:{g.home / 'grove.db'}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT id, disk_path, mem_path FROM sandboxes WHERE phase != 'terminated'"
        ).fetchall()
        files = {r[1] for r in rows} | {r[2] for r in rows}
        query = "SELECT disk_path, mem_path, state_path FROM templates"
        files |= {p for t in db.execute(query) for p in t}  # a delta's state is on tmpfs too
    finally:
        db.close()
    return {f for f in files if f}, {r[0] for r in rows}


def assert_consistent(h: Home, context: str) -> dict[str, dict[str, Any]]:
    g = h.grove
    listed = h.listed()  # starts a new engine, which recovers
    phases = {sid: s["phase"] for sid, s in listed.items()}
    assert not TRANSITIONAL & set(phases.values()), f"{context}: left mid-operation: {phases}"
    for sid, allowed in h.expected.items():
        if sid in phases or "gone" not in allowed:
            assert phases.get(sid) in allowed, f"{context}: {sid} is {phases.get(sid)}"
    running = {sid for sid, phase in phases.items() if phase == "running"}
    for sid in running:
        answer = h.cli("sandbox", "exec", sid, "--", "true", timeout=60)
        assert answer.code == 0, f"{context}: running {sid} does not answer: {answer.err}"
    if h.source:
        assert phases.get(h.source) == "running", f"{context}: source is {phases.get(h.source)}"
    # Processes: with pools off, every QEMU of this home is a running sandbox's.
    pids = {listed[sid]["pid"] for sid in running}
    assert set(g.qemu_pids()) == pids, f"{context}: QEMUs {g.qemu_pids()} vs sandboxes {pids}"
    files, live_ids = claimed(g)
    paths = Paths(g.home)
    for directory in (paths.disks, paths.memory_dir):
        stray = {str(p) for p in directory.iterdir()} - files
        assert not stray, f"{context}: unclaimed files in {directory}: {sorted(stray)}"
    socks = {p.name for p in paths.socket_dir.iterdir()}
    assert socks <= running, f"{context}: socket dirs of no running sandbox: {socks - running}"
    dirs = {p.name for p in paths.sandboxes.iterdir()}
    assert dirs <= live_ids, f"{context}: sandbox dirs without a record: {dirs - live_ids}"
    assert not (g.home / "pool").exists() or not any((g.home / "pool").iterdir())
    # Networks: one slot, namespace and host link per running sandbox, nothing else.
    db = sqlite3.connect(f"file:{g.home / 'grove.db'}?mode=ro", uri=True)
    try:
        owners = {r[0] for r in db.execute("SELECT owner FROM net_slots")}
    finally:
        db.close()
    assert owners == running, f"{context}: network slots {owners} vs running {running}"
    tag = home_tag(paths)
    spaces = {p.name for p in Path("/run/netns").glob(f"grove-{tag}-*")}
    assert len(spaces) == len(running), f"{context}: namespaces {spaces} for {running}"
    return listed


def clean_up(h: Home) -> None:
    """Back to one running source (and nothing else) for the next case."""
    for sid, s in h.listed().items():
        if sid != h.source and s["phase"] != "terminated":
            h.ok("sandbox", "terminate", sid)
    h.expected.clear()


def victim(h: Home, stopped: bool = False) -> str:
    sid = h.ok("sandbox", "create", ENV).out.strip()
    if stopped:
        h.ok("sandbox", "stop", sid)
    return str(sid)


def crash(h: Home, point: str, *args: str, pool: bool = False) -> None:
    kill_engine(h.grove)  # idle: the next engine starts with the crash point set
    started = h.cli("engine", "start", crash=point, pool=pool)
    assert started.code == 0, f"engine start failed: {started.err}"
    result = h.cli(*args, crash=point, pool=pool, timeout=600)
    try:
        wait_crash(h.grove, point)
    except AssertionError as exc:
        # The verb ended without the crash: what it said is the first clue.
        said = (result.err or result.out).strip()[-600:]
        verb = " ".join(args)
        raise AssertionError(f"{exc}\n'grove {verb}' exited {result.code}: {said}") from None


@pytest.mark.parametrize("point", POINTS)
def test_engine_killed_at_point(home: Home, point: str) -> None:
    h = home
    action = point.partition(".")[0]
    if action == "template":
        assert point == POINTS[0], "the first case boots the template"
        crash(h, point, "sandbox", "create", ENV)
        assert_consistent(h, point)
        h.source = h.ok("sandbox", "create", ENV).out.strip()  # boots it again
        h.ok("sandbox", "exec", h.source, "--", "sh", "-c", "echo src > /root/f")
        return
    assert h.source, "the template case must run first"
    if action == "create":
        crash(h, point, "sandbox", "create", ENV)
    elif action == "capture":
        crash(h, point, "sandbox", "fork", h.source, "--replicas", "2")
    elif action == "reset":
        crash(h, point, "sandbox", "reset", h.source)
    elif action == "terminate":
        sid = victim(h)
        h.expected[sid] = {"gone", "terminated"}
        crash(h, point, "sandbox", "terminate", sid)
    elif action == "stop":
        sid = victim(h)
        h.expected[sid] = {"stopped"}
        crash(h, point, "sandbox", "stop", sid)
    elif action == "start":
        sid = victim(h, stopped=True)
        h.expected[sid] = {"stopped"}
        crash(h, point, "sandbox", "start", sid)
    elif action == "pool":
        # The create succeeds; the engine dies a few seconds later, refilling its pool.
        crash(h, point, "sandbox", "create", ENV, pool=True)
    elif action == "shutdown":
        victim(h)
        crash(h, point, "engine", "stop")
        for sid, s in h.listed().items():
            if s["phase"] == "stopped":
                h.ok("sandbox", "start", sid)
    else:
        raise AssertionError(f"no case drives crash point {point}")
    assert_consistent(h, point)
    if action == "reset":  # the reset was finished: what the source wrote is gone
        gone = h.cli("sandbox", "exec", h.source, "--", "test", "-e", "/root/f")
        assert gone.code == 1, f"{point}: the reset was not finished: {gone.err}"
        h.ok("sandbox", "exec", h.source, "--", "sh", "-c", "echo src > /root/f")
    else:
        out = h.ok("sandbox", "exec", h.source, "--", "cat", "/root/f").out
        assert out == "src\n", f"{point}: the source lost its disk: {out!r}"
    clean_up(h)


def test_engine_killed_at_random_moments(home: Home) -> None:
    """Random kills, as an operator's bad day would have them; named points prove the rest."""
    h = home
    if not h.source:
        h.source = h.ok("sandbox", "create", ENV).out.strip()
    seed = int(os.environ.get("GROVE_TEST_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    for round_ in range(6):
        op = rng.choice(["create", "fork", "snapshot", "terminate"])
        if op == "create":
            args: tuple[str, ...] = ("sandbox", "create", ENV)
        elif op == "fork":
            args = ("sandbox", "fork", h.source, "--replicas", "2")
        elif op == "snapshot":
            args = ("snapshot", "create", h.source, f"rand-{round_}")
        else:
            args = ("sandbox", "terminate", victim(h))
        h.cli("ps")  # an engine is up before the verb starts
        engine = h.grove.engine_pid()
        assert engine is not None
        delay = rng.uniform(0.0, 1.5)
        proc = subprocess.Popen(
            [*_cli(h.grove), *args],
            env={**h.grove.env, **QUIET},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)  # the random moment itself is what this test varies
        os.kill(engine, signal.SIGKILL)
        wait_gone(engine)
        proc.communicate(timeout=120)
        assert_consistent(h, f"seed {seed} round {round_}: {op} killed after {delay:.2f} s")
    snaps = h.ok("snapshot", "ls", "--json").json()
    assert isinstance(snaps, list)
    for snap in snaps:
        h.cli("snapshot", "rm", snap["name"])
    clean_up(h)


def test_after_engine_stop_only_templates_remain(home: Home) -> None:
    h = home
    if h.source:
        h.ok("sandbox", "terminate", h.source)
        h.source = ""
    h.ok("sandbox", "terminate", "--all")
    h.ok("engine", "stop")
    g = h.grove
    assert g.qemu_pids() == []
    files, live = claimed(g)
    assert not live, f"sandboxes left: {live}"
    paths = Paths(g.home)
    assert {str(p) for p in paths.disks.iterdir()} <= files
    mems = list(paths.memory_dir.iterdir())
    assert {str(p) for p in mems} <= files
    # Template files gave back the holes forks filled: none is fully resident.
    for mem in mems:
        resident = mem.stat().st_blocks * 512
        assert resident < mem.stat().st_size * 0.5, f"{mem} holds {resident >> 20} MiB"


def _cli(g: Grove) -> list[str]:
    return [sys.executable, "-m", "engine.cli.main"]
