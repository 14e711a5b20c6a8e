"""kill -9 of the engine loses nothing: the next engine re-adopts live VMs and fails dead ones."""

from __future__ import annotations

import os
import signal

from conftest import ENV, Grove, exited
from waiting import wait_for


def _wait_gone(pid: int, what: str, timeout: float = 30) -> None:
    wait_for(lambda: exited(pid), timeout, f"{what} {pid} to exit", interval=0.05)


def test_sigkill_engine_then_readopt(grove: Grove) -> None:
    keep = grove.ok("sandbox", "create", ENV, "--name", "survivor").out.strip()
    doomed = grove.ok("sandbox", "create", ENV).out.strip()
    grove.ok("sandbox", "exec", keep, "--", "sh", "-c", "echo before > /tmp/state")
    before = {s["id"]: s for s in grove.ok("ps", "--json").json()}  # type: ignore[union-attr]
    engine = grove.engine_pid()
    assert engine is not None
    os.kill(engine, signal.SIGKILL)
    _wait_gone(engine, "the killed engine")
    # While no engine runs, one VM dies: the next engine must notice, not pretend.
    os.kill(before[doomed]["pid"], signal.SIGKILL)
    _wait_gone(before[doomed]["pid"], "the killed QEMU")

    after = {s["id"]: s for s in grove.ok("ps", "--json").json()}  # type: ignore[union-attr]
    new_engine = grove.engine_pid()
    assert new_engine is not None and new_engine != engine
    assert set(before) == set(after)
    assert after[keep]["phase"] == "running"
    assert after[keep]["pid"] == before[keep]["pid"]  # same VM process, re-adopted
    assert grove.ok("sandbox", "exec", keep, "--", "cat", "/tmp/state").out == "before\n"
    assert after[doomed]["phase"] == "failed"
    assert after[doomed]["error"]
    grove.ok("sandbox", "terminate", doomed)
    grove.ok("sandbox", "terminate", keep)
    assert "adopted" in grove.ok("logs", keep).out


def test_engine_stop_leaves_no_vm_and_keeps_disks(fresh_grove: Grove, grove: Grove) -> None:
    g = fresh_grove
    # Reuse the session's built image by pointing at the same layers.
    for part in ("images", "envs"):
        src = grove.home / part
        if src.exists() and not (g.home / part).exists():
            os.symlink(src, g.home / part)
    sid = g.ok("sandbox", "create", ENV, timeout=900).out.strip()
    g.ok("sandbox", "exec", sid, "--", "sh", "-c", "echo on-disk > /root/f; sync")
    status = g.ok("engine", "status", "--json").json()
    assert isinstance(status, dict) and status["running"] is True
    assert {"running", "pid", "socket", "accelerator"} <= status.keys()
    assert oct(os.stat(status["socket"]).st_mode & 0o777) == oct(0o600)
    g.ok("engine", "stop")
    assert g.qemu_pids() == []
    assert not os.path.exists(status["socket"])
    listed = g.ok("ps", "--json").json()  # restarts the engine on demand
    assert [s["phase"] for s in listed if s["id"] == sid] == ["stopped"]  # type: ignore[union-attr, index]
    g.ok("sandbox", "start", sid, timeout=600)
    assert g.ok("sandbox", "exec", sid, "--", "cat", "/root/f").out == "on-disk\n"
