"""Services on real VMs: readiness probes, failures, restarts, logs, published ports, and
their survival across an engine restart and into fork children."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from typing import Any

from conftest import ENV, Grove, exited
from waiting import wait_for

# Python starts in ~2-3 s under TCG, http.server imports take several more on a busy host.
SLOW_READY = "120"
HTTP_SERVER = ["python3", "-m", "http.server", "8000", "--bind", "0.0.0.0", "--directory", "/etc"]
TCP_SERVER = [
    "python3", "-c",
    "import socket,time\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', 7000)); s.listen(); print('listening', flush=True)\n"
    "while True: c,_=s.accept(); c.sendall(b'hi\\n'); c.close()",
]  # fmt: skip


def _json(grove: Grove, *args: str) -> Any:
    return grove.ok(*args).json()


def _start(grove: Grove, sandbox: str, name: str, *options: str, cmd: list[str]) -> dict[str, Any]:
    info = _json(grove, "service", "start", sandbox, name, "--json", *options, "--", *cmd)
    assert isinstance(info, dict)
    return info


def _logs(grove: Grove, sandbox: str, name: str, *options: str) -> list[dict[str, Any]]:
    data = _json(grove, "service", "logs", sandbox, name, "--json", *options)
    assert isinstance(data, dict) and set(data) == {"lines"}
    return list(data["lines"])


def _wait(probe: Any, timeout: float = 60, what: str = "condition") -> Any:
    return wait_for(probe, timeout, what, interval=0.3)


def _http_get(port: int, path: str = "/hostname") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
        return str(reply.read().decode())


def test_ready_file_logs_and_json_contract(grove: Grove, sandbox: str) -> None:
    started = time.monotonic()
    info = _start(grove, sandbox, "worker", "--ready-file", "/tmp/worker.ready",
                  "--env", "GREETING=hello", "--cwd", "/tmp",
                  cmd=["sh", "-c", 'echo "$GREETING from $(pwd)"; echo warn >&2; sleep 2; '
                       "echo up; touch /tmp/worker.ready; exec sleep 1000"])  # fmt: skip
    assert time.monotonic() - started >= 2.0, "returned before the ready file existed"
    assert {"name", "state", "pid", "ready", "published_ports"} <= set(info)
    assert (info["name"], info["state"], info["ready"]) == ("worker", "running", True)
    assert info["pid"] and info["published_ports"] == []
    status = _json(grove, "service", "status", sandbox, "worker", "--json")
    assert status["state"] == "running" and status["pid"] == info["pid"]
    lines = _wait(lambda: (ls := _logs(grove, sandbox, "worker")) and
                  any(x["text"] == "up" for x in ls) and ls, what="the 'up' line")  # fmt: skip
    texts = [(x["stream"], x["text"]) for x in lines]
    assert ("stdout", "hello from /tmp") in texts and ("stderr", "warn") in texts
    assert all(isinstance(x["ts"], float) for x in lines)
    assert _logs(grove, sandbox, "worker", "--tail", "2") == _logs(grove, sandbox, "worker")[-2:]
    human = grove.ok("service", "logs", sandbox, "worker").out
    assert "stdout | hello from /tmp" in human and "stderr | warn" in human
    listed = _json(grove, "service", "ls", sandbox, "--json")
    assert [s["name"] for s in listed] == ["worker"]
    again = grove.run("service", "start", sandbox, "worker", "--json", "--", "true")
    assert again.json()["error"]["code"] == "service_exists"  # type: ignore[index]
    stopped = _json(grove, "service", "stop", sandbox, "worker", "--json")
    assert stopped["state"] == "stopped" and stopped["pid"] is None
    gone = grove.run("sandbox", "exec", sandbox, "--", "sh", "-c", f"kill -0 {info['pid']}")
    assert gone.code != 0


def test_ready_tcp_and_command_probes(grove: Grove, sandbox: str) -> None:
    tcp = _start(grove, sandbox, "tcp", "--ready-tcp", "127.0.0.1:7000",
                 "--ready-timeout-seconds", SLOW_READY, cmd=TCP_SERVER)  # fmt: skip
    assert tcp["ready"] and tcp["state"] == "running"
    assert any(x["text"] == "listening" for x in _logs(grove, sandbox, "tcp"))
    cmd = _start(grove, sandbox, "cmd", "--ready-command", "test -s /tmp/cmd.state",
                 "--ready-interval-ms", "50",
                 cmd=["sh", "-c", "sleep 1; echo ok > /tmp/cmd.state; exec sleep 1000"],
                 )  # fmt: skip
    assert cmd["ready"] and cmd["state"] == "running"
    probe_log = [x["text"] for x in _logs(grove, sandbox, "cmd") if x["stream"] == "grove"]
    assert any(t.startswith("ready (command test -s /tmp/cmd.state)") for t in probe_log)


def test_ready_http_and_published_port_answer_from_the_host(grove: Grove, sandbox: str) -> None:
    info = _start(grove, sandbox, "web", "--ready-http", "http://127.0.0.1:8000/",
                  "--ready-timeout-seconds", SLOW_READY, "--publish", "8000",
                  cmd=HTTP_SERVER)  # fmt: skip
    assert info["ready"]
    [port] = info["published_ports"]
    assert port["host"] == "127.0.0.1" and port["guest_port"] == 8000 and port["host_port"] > 0
    hostname = grove.ok("sandbox", "exec", sandbox, "--", "hostname").out
    assert _http_get(port["host_port"]) == hostname
    human = grove.ok("service", "ls", sandbox).out
    assert f"127.0.0.1:{port['host_port']}->8000" in human
    grove.ok("service", "stop", sandbox, "web")
    status = _json(grove, "service", "status", sandbox, "web", "--json")
    assert status["published_ports"] == []


def test_failing_probe_reports_probe_error_and_log_tail_and_stops(
    grove: Grove, sandbox: str
) -> None:
    script = "echo booting; echo 'cannot bind: port taken' >&2; exec sleep 1000"
    result = grove.run("service", "start", sandbox, "broken", "--json", "--ready-tcp",
                       "127.0.0.1:9", "--ready-timeout-seconds", "3", "--", "sh", "-c",
                       script)  # fmt: skip
    assert result.code != 0
    error = result.json()["error"]  # type: ignore[index]
    assert error["code"] == "service_not_ready" and error["remedy"]
    message = error["message"]
    assert "not ready after 3s" in message and "127.0.0.1:9" in message
    assert "stderr: cannot bind: port taken" in message and "stdout: booting" in message
    status = _json(grove, "service", "status", sandbox, "broken", "--json")
    assert status["state"] == "failed" and status["pid"] is None
    left = grove.run("sandbox", "exec", sandbox, "--", "pgrep", "-f", "sleep 1000")
    assert left.code == 1, "the unready process must be stopped"
    # Exiting before ready fails at once, with its own output only.
    early = grove.run("service", "start", sandbox, "early", "--ready-file", "/nonexistent",
                      "--", "sh", "-c", "echo dying; exit 4")  # fmt: skip
    assert early.code != 0
    assert "exited with exit code 4 before it was ready" in early.err and "dying" in early.err


def test_crashing_service_is_restarted_on_failure(grove: Grove, sandbox: str) -> None:
    info = _start(grove, sandbox, "flaky", "--restart", "on-failure",
                  cmd=["sh", "-c", "echo run; sleep 1; exit 3"])  # fmt: skip
    assert info["state"] == "running"
    status = _wait(lambda: (s := _json(grove, "service", "status", sandbox, "flaky", "--json"))
                   and s["restarts"] >= 2 and s, timeout=90, what="two restarts")  # fmt: skip
    assert status["exit_code"] == 3 or status["state"] == "running"

    # The third run's output may still be on its way when the restart count moves.
    def runs() -> int:
        return [x["text"] for x in _logs(grove, sandbox, "flaky", "--all")].count("run")

    wait_for(runs, 60, "the third run's output", ready=lambda n: n >= 3, interval=0.3)
    grove.ok("service", "stop", sandbox, "flaky")
    assert _json(grove, "service", "status", sandbox, "flaky", "--json")["state"] == "stopped"
    # Without a policy a failing exit is final.
    _start(grove, sandbox, "once", cmd=["sh", "-c", "exit 5"])
    final = _wait(lambda: (s := _json(grove, "service", "status", sandbox, "once", "--json"))
                  and s["state"] == "failed" and s, what="failed state")  # fmt: skip
    assert final["exit_code"] == 5 and final["restarts"] == 0


def test_logs_follow_since_and_after_terminate(grove: Grove) -> None:
    sid = grove.ok("sandbox", "create", ENV).out.strip()
    _start(grove, sid, "clock",
           cmd=["sh", "-c", "i=0; while [ $i -lt 8 ]; do i=$((i+1)); echo tick $i; sleep 0.5; "
                "done"])  # fmt: skip
    follow = grove.popen("service", "logs", sid, "clock", "--follow", "--json")
    out, _ = follow.communicate(timeout=120)  # ends when the service ends
    assert follow.returncode == 0
    followed = [line for batch in out.decode().splitlines() for line in json.loads(batch)["lines"]]
    assert [x["text"] for x in followed if x["stream"] == "stdout"] == [
        f"tick {i}" for i in range(1, 9)
    ]
    assert _logs(grove, sid, "clock", "--since", "1h")
    assert _logs(grove, sid, "clock", "--since", str(time.time() + 60)) == []
    grove.ok("sandbox", "terminate", sid)
    kept = _logs(grove, sid, "clock", "--all")
    assert [x["text"] for x in kept if x["stream"] == "stdout"][-1] == "tick 8"
    assert (grove.home / "logs" / sid / "clock.log").exists()
    events = grove.ok("logs", sid).out
    assert "service_started" in events and "service_exited" in events


def test_console_lines_are_merged_into_sandbox_logs(grove: Grove, sandbox: str) -> None:
    grove.ok("sandbox", "exec", sandbox, "--", "sh", "-c", "echo grove-console-marker > /dev/ttyS0")
    out = _wait(lambda: (o := grove.ok("logs", sandbox).out) and "grove-console-marker" in o and o,
                what="the console line")  # fmt: skip
    line = next(x for x in out.splitlines() if "grove-console-marker" in x)
    assert " console " in line
    events = [json.loads(x) for x in grove.ok("logs", sandbox, "--json").out.splitlines()]
    assert any(e["kind"] == "console" and e["detail"]["line"] == "grove-console-marker"
               for e in events)  # fmt: skip


def test_service_input_errors(grove: Grove, sandbox: str) -> None:
    def code(*args: str) -> str:
        own = list(args)
        cut = own.index("--") if "--" in own else len(own)
        result = grove.run(*own[:cut], "--json", *own[cut:])
        assert result.code != 0, args
        error = result.json()["error"]  # type: ignore[index]
        assert error["message"] and error["remedy"] and "\n" not in error["remedy"]
        return str(error["code"])

    start = ("service", "start", sandbox)
    assert code(*start, "Bad Name", "--", "true") == "invalid_argument"
    assert code(*start, "svc") == "invalid_argument"  # no command
    assert code(*start, "svc", "--ready-file", "rel/path", "--", "true") == "invalid_argument"
    assert code(*start, "svc", "--ready-tcp", "nohostport", "--", "true") == "invalid_argument"
    assert code(*start, "svc", "--ready-http", "https://x/", "--", "true") == "invalid_argument"
    assert code(*start, "svc", "--ready-file", "/a", "--ready-tcp", "h:1", "--", "true") == "usage"
    assert code(*start, "svc", "--publish", "80:abc", "--", "true") == "invalid_argument"
    assert code(*start, "svc", "--restart", "always", "--", "true") == "usage"
    assert code(*start, "svc", "--ready-timeout-seconds", "0", "--", "true") == "invalid_argument"
    assert code(*start, "svc", "--", "no-such-binary") == "command_not_found"
    assert code("service", "status", sandbox, "nothing") == "service_not_found"
    assert code("service", "logs", sandbox, "nothing") == "service_not_found"
    assert code("service", "logs", sandbox, "x", "--tail", "0") == "invalid_argument"
    assert code("service", "logs", sandbox, "x", "--since", "yesterday") == "invalid_argument"
    assert code("service", "ls", "sb-nope") == "sandbox_not_found"


def test_services_and_shells_survive_an_engine_restart(grove: Grove, sandbox: str) -> None:
    script = "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.5; done"
    _start(grove, sandbox, "ticker", cmd=["sh", "-c", script])
    shell = grove.ok("shell", "open", sandbox).out.strip()
    grove.ok("shell", "write", sandbox, shell, "--input", "export KEPT=yes")
    before = _json(grove, "service", "status", sandbox, "ticker", "--json")
    engine = grove.engine_pid()
    assert engine is not None
    os.kill(engine, signal.SIGKILL)
    _wait(lambda: exited(engine), what="the engine to die")
    after = _json(grove, "service", "status", sandbox, "ticker", "--json")  # starts a new engine
    assert after["state"] == "running" and after["pid"] == before["pid"]
    count = len(_logs(grove, sandbox, "ticker", "--all"))
    _wait(lambda: len(_logs(grove, sandbox, "ticker", "--all")) > count + 2,
          what="output after the restart")  # fmt: skip
    grove.ok("shell", "write", sandbox, shell, "--input", "echo kept=$KEPT")
    _wait(lambda: "kept=yes" in str(_json(grove, "shell", "read", sandbox, shell, "--json",
                                          "--wait-ms", "1000")["output"]),
          what="the shell to answer")  # fmt: skip
    grove.ok("service", "stop", sandbox, "ticker")
    grove.ok("shell", "close", sandbox, shell)


def test_fork_children_inherit_services_and_shells(grove: Grove, sandbox: str) -> None:
    parent = _start(grove, sandbox, "web", "--ready-http", "http://127.0.0.1:8000/",
                    "--ready-timeout-seconds", SLOW_READY, "--publish", "8000",
                    cmd=HTTP_SERVER)  # fmt: skip
    shell = grove.ok("shell", "open", sandbox).out.strip()
    grove.ok("shell", "write", sandbox, shell, "--input", "echo parent-was-here")
    _wait(lambda: "parent-was-here\r\n" in str(_json(grove, "shell", "read", sandbox, shell,
                                                     "--json")["output"]), what="echo")  # fmt: skip
    fork = _json(grove, "sandbox", "fork", sandbox, "--json")
    [child] = fork["children"]
    cid = child["id"]
    try:
        status = _json(grove, "service", "status", cid, "web", "--json")
        assert status["state"] == "running" and status["pid"] == parent["pid"]
        [port] = status["published_ports"]
        assert port["host_port"] != parent["published_ports"][0]["host_port"]
        hostname = grove.ok("sandbox", "exec", cid, "--", "hostname").out
        assert _http_get(port["host_port"]) == hostname
        assert _http_get(parent["published_ports"][0]["host_port"]) != hostname
        # The child's shell is the parent's, scrollback included, and it now lives on its own.
        text = str(_json(grove, "shell", "read", cid, shell, "--json")["output"])
        assert "parent-was-here" in text
        grove.ok("shell", "write", cid, shell, "--input", "hostname")
        _wait(lambda: hostname.strip() in str(_json(grove, "shell", "read", cid, shell, "--json",
                                                    "--wait-ms", "1000")["output"]),
              what="the child's shell to answer")  # fmt: skip
        assert grove.ok("logs", cid).out
    finally:
        grove.run("sandbox", "terminate", cid)
