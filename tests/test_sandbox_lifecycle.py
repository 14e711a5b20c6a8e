"""Sandboxes on real VMs: create, exec, stop/start, terminate, run — through the real CLI."""

from __future__ import annotations

import os
import time
from pathlib import Path

from conftest import ENV, Grove, exited
from waiting import wait_for


def running_ids(grove: Grove) -> set[str]:
    listed = grove.ok("ps", "--json").json()
    assert isinstance(listed, list)
    return {s["id"] for s in listed if s["phase"] == "running"}


def test_run_prints_guest_kernel_and_exits_with_command_code(grove: Grove) -> None:
    before = running_ids(grove)  # other tests' sandboxes may share this engine
    result = grove.ok("run", ENV, "--", "uname", "-a")
    assert result.out.startswith("Linux ")
    assert "cloud-amd64" in result.out  # the guest's Debian cloud kernel, not the host's
    assert os.uname().release not in result.out
    failed = grove.run("run", ENV, "--", "sh", "-c", "exit 7")
    assert failed.code == 7
    # Neither run left its sandbox running.
    assert running_ids(grove) <= before


def test_create_contract_and_ls(grove: Grove) -> None:
    created = grove.ok("sandbox", "create", ENV, "--name", "contract-test", "--json").json()
    assert isinstance(created, dict)
    assert {"id", "name", "environment", "phase"} <= created.keys()
    assert created["name"] == "contract-test"
    assert created["environment"] == ENV
    assert created["phase"] == "running"
    listed = grove.ok("sandbox", "ls", "--json").json()
    assert isinstance(listed, list)
    mine = [s for s in listed if s["id"] == created["id"]]
    assert mine and mine[0]["phase"] == "running"
    assert created["id"] in grove.ok("ps").out
    # A name works wherever an id does.
    assert grove.ok("sandbox", "exec", "contract-test", "--", "hostname").out.strip() == (
        "contract-test"
    )
    # The files say so too, not the name of the warm VM the sandbox was made from.
    files = grove.ok("sandbox", "exec", "contract-test", "--", "sh", "-c",
                     "cat /etc/hostname; grep ^127.0.1.1 /etc/hosts").out.split()  # fmt: skip
    assert files == ["contract-test", "127.0.1.1", "contract-test"]
    grove.ok("sandbox", "terminate", created["id"])
    assert created["id"] not in grove.ok("ps").out
    assert created["id"] in grove.ok("ps", "--all").out


def test_exec_streams_codes_env_cwd_and_json(grove: Grove, sandbox: str) -> None:
    result = grove.run(
        "sandbox", "exec", sandbox, "--", "sh", "-c", "echo out; echo err >&2; exit 3"
    )
    assert (result.code, result.out, result.err) == (3, "out\n", "err\n")
    env = grove.ok("sandbox", "exec", sandbox, "--env", "GREETING=hi there", "--", "sh", "-c",
                   'printf "%s" "$GREETING"')  # fmt: skip
    assert env.out == "hi there"
    assert grove.ok("sandbox", "exec", sandbox, "--cwd", "/etc", "--", "pwd").out == "/etc\n"
    js = grove.ok("sandbox", "exec", sandbox, "--json", "--", "sh", "-c", "echo 42; echo e >&2")
    data = js.json()
    assert isinstance(data, dict)
    assert data["exit_code"] == 0 and data["stdout"] == "42\n" and data["stderr"] == "e\n"
    assert data["duration_ms"] > 0
    stdin = grove.run("sandbox", "exec", sandbox, "-i", "--", "wc", "-c", input="x" * 100000)
    assert stdin.out.strip() == "100000"


def test_exec_output_is_streamed_live(grove: Grove, sandbox: str) -> None:
    proc = grove.popen(
        "sandbox", "exec", sandbox, "--", "sh", "-c", "echo first; sleep 4; echo second"
    )
    assert proc.stdout is not None
    started = time.monotonic()
    first = proc.stdout.readline()
    first_at = time.monotonic() - started
    rest, _ = proc.communicate(timeout=60)
    total = time.monotonic() - started
    assert first == b"first\n" and rest == b"second\n"
    assert total - first_at >= 3.0, "first line should arrive well before the command ends"


def test_timeout_kills_the_whole_process_group(grove: Grove, sandbox: str) -> None:
    started = time.monotonic()
    result = grove.run("sandbox", "exec", sandbox, "--timeout", "2", "--", "sh", "-c",
                       "sleep 300 & echo $! > /tmp/child; sleep 300")  # fmt: skip
    assert result.code == 124
    assert time.monotonic() - started < 60
    # The background child was in the same process group: it must be gone too.
    check = grove.run("sandbox", "exec", sandbox, "--", "sh", "-c", "kill -0 $(cat /tmp/child)")
    assert check.code != 0


def test_stop_keeps_disk_and_start_boots_it(grove: Grove, sandbox: str) -> None:
    grove.ok("sandbox", "exec", sandbox, "--", "sh", "-c", "echo kept > /root/marker; sync")
    stopped = grove.ok("sandbox", "stop", sandbox, "--json").json()
    assert isinstance(stopped, dict) and stopped["phase"] == "stopped"
    refused = grove.run("sandbox", "exec", sandbox, "--", "true")
    assert refused.code != 0 and "stopped" in refused.err and "start" in refused.err
    started = grove.ok("sandbox", "start", sandbox, "--json", timeout=600).json()
    assert isinstance(started, dict) and started["phase"] == "running"
    assert grove.ok("sandbox", "exec", sandbox, "--", "cat", "/root/marker").out == "kept\n"


def test_terminate_leaves_nothing_behind(grove: Grove) -> None:
    sid = grove.ok("sandbox", "create", ENV).out.strip()
    sdir = grove.home / "sandboxes" / sid
    assert sdir.is_dir()
    pid = next(s for s in grove.ok("ps", "--json").json() if s["id"] == sid)["pid"]  # type: ignore[index, union-attr]
    assert pid and Path(f"/proc/{pid}").exists()
    grove.ok("sandbox", "terminate", sid)
    assert not sdir.exists()
    assert not (grove.home / "run" / sid).exists()
    wait_for(lambda: exited(pid), 30, f"QEMU {pid} to exit", interval=0.05)
    again = grove.run("sandbox", "terminate", sid, "--json")
    assert again.code != 0
    error = again.json()["error"]  # type: ignore[index]
    assert error["code"] == "already_terminated" and error["remedy"]


def test_terminate_all(fresh_grove: Grove) -> None:
    # --all ends every sandbox of the engine: on its own engine, not the one tests share.
    g = fresh_grove
    ids = [g.ok("sandbox", "create", ENV, timeout=900).out.strip() for _ in range(2)]
    done = g.ok("sandbox", "terminate", "--all", "--json").json()
    assert isinstance(done, list)
    assert set(ids) <= {d["id"] for d in done}
    assert g.ok("ps", "--json").json() == []


def test_logs_show_lifecycle_events(grove: Grove, sandbox: str) -> None:
    grove.ok("sandbox", "exec", sandbox, "--", "true")
    out = grove.ok("logs", sandbox).out
    assert "created" in out and "exec_started" in out and "exec_ended" in out
