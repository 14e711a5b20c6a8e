"""Shells and services against a guest agent running on the host (no VM): the agent's probe
and pty_signal ops, the engine's Shell (scrollback, viewers, back-pressure) and Service
(readiness, logs, restarts, stop) objects, plus their pure helpers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from test_agent_protocol import async_test, client_for
from waiting import wait_for_async

from engine.agent import AgentClient
from engine.cli.main import build_parser
from engine.cli.service_cmds import parse_publish as cli_publish
from engine.cli.service_cmds import parse_since
from engine.cli.terminal import DetachFilter
from engine.errors import GroveError
from engine.secrets.redact import Redactor
from engine.services import logs as logs_mod
from engine.services.logs import LineSplitter, ServiceLog
from engine.services.service import NotReady, Service, ServiceStatus
from engine.services.spec import PortRequest, Probe, ServiceSpec, parse_publish
from engine.shells import shell as shell_mod
from engine.shells.manager import spawn_first
from engine.shells.scrollback import Scrollback, complete_utf8, decode_prefix
from engine.shells.shell import Shell, ShellInfo

pytestmark = pytest.mark.timeout(120)


# -- pure helpers ----------------------------------------------------------------------------


def test_scrollback_keeps_the_latest_bytes_with_absolute_cursors() -> None:
    ring = Scrollback(10)
    ring.append(b"hello")
    ring.append(b"world!!")
    assert (ring.start, ring.end) == (2, 12)
    assert ring.read(0, 100) == (2, b"lloworld!!")  # asked for dropped bytes: told where it starts
    assert ring.read(5, 3) == (5, b"wor")
    assert ring.read(50, 3) == (12, b"")
    copy = ring.copy()
    ring.append(b"x")
    assert copy.end == 12 and ring.end == 13
    restored = Scrollback.restore(1000, b"")
    assert (restored.start, restored.end) == (1000, 1000)


def test_utf8_reads_never_split_a_character() -> None:
    data = "héllo wörld €".encode()
    assert complete_utf8(data[:-1]) == len(data) - 3
    assert decode_prefix(data, 5) == ("héllo", 6)
    assert decode_prefix(data[:-1], 100) == ("héllo wörld ", 14)
    assert decode_prefix(data[:-1], 100, final=True)[1] == len(data) - 1
    assert decode_prefix("€€€€".encode(), 2) == ("€€", 6)


def test_line_splitter_handles_partials_crlf_and_long_lines() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"one\r\ntw") == ["one"]
    assert splitter.pending
    assert splitter.feed(b"o\nthree") == ["two"]
    assert splitter.flush() == ["three"]
    assert not splitter.pending
    long = splitter.feed(b"x" * (logs_mod.MAX_LINE * 2 + 5))
    assert long == ["x" * logs_mod.MAX_LINE] * 2 and splitter.flush() == ["xxxxx"]


def test_service_log_rotates_tails_filters_and_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs_mod, "MAX_BYTES", 2000)
    log = ServiceLog(tmp_path / "logs", "svc")
    for i in range(200):
        log.append("stdout", [f"line {i}"], ts=1000.0 + i)
    files = log.files()
    assert len(files) == logs_mod.KEEP + 1  # rotated, bounded
    assert sum(p.stat().st_size for p in files) <= 2000 * (logs_mod.KEEP + 1)
    assert oct(files[-1].stat().st_mode & 0o777) == oct(0o600)
    assert [x.text for x in log.read(tail=3)] == ["line 197", "line 198", "line 199"]
    assert [x.text for x in log.read(since=1198.0)] == ["line 198", "line 199"]
    everything = log.read()
    assert everything[-1].text == "line 199" and everything == sorted(
        everything, key=lambda x: x.ts
    )
    new, complete = log.since_seq(log.last_seq - 2)
    assert [x.text for x in new] == ["line 198", "line 199"] and complete
    log.copy_to(tmp_path / "child")
    child = ServiceLog(tmp_path / "child", "svc")
    assert [x.text for x in child.read(tail=1)] == ["line 199"]
    log.close()


def test_spec_validation_and_parsers() -> None:
    ok = ServiceSpec("web", ["python3"], probe=Probe("http", "http://127.0.0.1:80/"),
                     publish=[PortRequest(80)]).validate()  # fmt: skip
    assert ServiceSpec.from_dict(ok.to_dict()) == ok
    bad: list[ServiceSpec] = [
        ServiceSpec("Web", ["x"]),
        ServiceSpec("web", []),
        ServiceSpec("web", ["x"], probe=Probe("file", "relative")),
        ServiceSpec("web", ["x"], probe=Probe("tcp", "no-port")),
        ServiceSpec("web", ["x"], probe=Probe("http", "https://x/")),
        ServiceSpec("web", ["x"], probe=Probe("dns", "x")),
        ServiceSpec("web", ["x"], restart="always"),
        ServiceSpec("web", ["x"], interval_ms=1),
        ServiceSpec("web", ["x"], env={"1BAD": "v"}),
        ServiceSpec("web", ["x"], publish=[PortRequest(80), PortRequest(80)]),
    ]
    for spec in bad:
        with pytest.raises(GroveError) as info:
            spec.validate()
        assert info.value.code == "invalid_argument" and info.value.remedy
    assert parse_publish("8080:80") == PortRequest(80, 8080)
    assert parse_publish("80") == PortRequest(80, 0)
    assert cli_publish("8080:80") == (80, 8080)  # (guest port, host port)
    assert cli_publish("80") == (80, 0)
    for text in ("80:x", "x", "0", "70000"):
        with pytest.raises(GroveError):
            cli_publish(text)
    assert parse_since("10m", now=1000.0) == 400.0
    assert parse_since("1700000000") == 1700000000.0
    assert parse_since("2024-05-01T12:00:00+00:00") == 1714564800.0
    with pytest.raises(GroveError):
        parse_since("yesterday")


def test_detach_filter_and_shell_parser() -> None:
    keys = DetachFilter()
    assert keys.feed(b"ls\r") == (b"ls\r", False)
    assert keys.feed(b"a\x1d") == (b"a", False)  # waits for the next key
    assert keys.feed(b"\x1d") == (b"\x1d", False)  # Ctrl+] twice: one literal Ctrl+]
    assert keys.feed(b"\x1dx") == (b"\x1dx", False)
    assert keys.feed(b"q\x1dd rest") == (b"q", True)
    parser = build_parser()
    assert parser.parse_args(["shell", "sb-1"]).sub == "attach"
    args = parser.parse_args(["shell", "sb-1", "sh-abcdef", "--no-replay"])
    assert (args.sub, args.shell_id, args.no_replay) == ("attach", "sh-abcdef", True)
    assert parser.parse_args(["shell", "open", "sb-1", "--cols", "90"]).cols == 90
    assert parser.parse_args(["shell", "ls", "sb-1"]).sub == "ls"


# -- the agent's ops -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def http_server(status: int) -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.0 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _probe(client: AgentClient, kind: str, target: str) -> dict[str, Any]:
    return await client.request({"op": "probe", "kind": kind, "target": target, "timeout_ms": 500})


@async_test
async def test_agent_probe_op(tmp_path: Path) -> None:
    async with client_for(tmp_path) as (_, client):
        marker = tmp_path / "ready"
        assert (await _probe(client, "file", str(marker)))["ready"] is False
        marker.touch()
        assert (await _probe(client, "file", str(marker)))["ready"] is True
        closed = await _probe(client, "tcp", f"127.0.0.1:{_closed_port()}")
        assert closed["ready"] is False and "refused" in closed["error"].lower()
        async with http_server(200) as port:
            assert (await _probe(client, "tcp", f"127.0.0.1:{port}"))["ready"] is True
            assert (await _probe(client, "http", f"http://127.0.0.1:{port}/health"))["ready"]
        async with http_server(503) as port:
            failed = await _probe(client, "http", f"http://127.0.0.1:{port}/")
            assert failed["ready"] is False and "503" in failed["error"]
        for kind, target in (("dns", "x"), ("tcp", "nohost"), ("http", "https://x/")):
            with pytest.raises(Exception) as info:
                await _probe(client, kind, target)
            assert getattr(info.value, "code", "") == "bad_request"


@async_test
async def test_pty_signal_reaches_the_foreground_job_not_the_shell(tmp_path: Path) -> None:
    async with client_for(tmp_path) as (_, client):
        handle = await client.exec(["bash", "--norc", "--noprofile", "-i"], pty=True)
        output = bytearray()

        async def read() -> None:
            async for _, data in handle.output():
                output.extend(data)

        reader = asyncio.create_task(read())
        await handle.write_stdin(b"sleep 300\n")
        # Until bash has started it (and handed it the terminal), a ^C would only hit the prompt.
        await wait_for_async(lambda: _children(handle.pid), 30, "bash to run sleep 300",
                             ready=lambda names: "sleep" in names)  # fmt: skip
        await client.request({"op": "pty_signal", "target_channel": handle.channel,
                              "signal": "INT"})  # fmt: skip
        await handle.write_stdin(b"echo status=$?\n")
        await wait_for_async(lambda: bytes(output), 30, "status=130 from the shell",
                             ready=lambda out: b"status=130" in out)  # fmt: skip
        assert not handle.exited  # the shell itself survived
        await handle.write_stdin(b"exit 0\n")
        assert (await handle.wait()).exit_code == 0
        await reader


def _children(pid: int) -> list[str]:
    """Names of pid's child processes (a name changes at exec)."""
    try:
        return [child.name() for child in psutil.Process(pid).children()]
    except psutil.Error:
        return []


# -- the engine's objects ----------------------------------------------------------------------


@async_test
async def test_shell_falls_back_when_the_first_choice_is_missing(tmp_path: Path) -> None:
    async with client_for(tmp_path) as (_, client):
        choices = [["no-such-shell-here", "-l"], ["sh"]]
        argv, handle = await spawn_first(client, choices, None, "", 24, 80, "xterm")
        assert argv == ["sh"] and handle.pid
        await handle.write_stdin(b"exit 4\n")
        assert (await handle.wait()).exit_code == 4
        with pytest.raises(GroveError) as info:
            await spawn_first(client, [["no-such-shell-here"]], None, "", 24, 80, "xterm")
        assert info.value.code == "command_not_found" and "--shell" in info.value.remedy
        with pytest.raises(GroveError) as info:
            await spawn_first(client, [["sh"]], None, "/no/such/dir", 24, 80, "xterm")
        assert info.value.code == "bad_cwd"


def _shell(client: AgentClient, handle: Any) -> Shell:
    info = ShellInfo("sh-000001", "sb-test", handle.channel, ["bash"], "", 80, 24, "xterm",
                     handle.pid, time.time())  # fmt: skip
    shell = Shell(info, lambda _shell: None, Redactor())
    shell.bind(client, handle)
    return shell


@async_test
async def test_shell_keeps_output_for_viewers_and_back_pressures_a_slow_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shell_mod, "LAG_LIMIT", 64 * 1024)
    # A viewer that reads nothing for STALL_S stops holding the shell back: not while a loaded
    # machine is slow to get here.
    monkeypatch.setattr(shell_mod, "STALL_S", 120.0)
    async with client_for(tmp_path) as (_, client):
        handle = await client.exec(["sh"], pty=True)
        shell = _shell(client, handle)
        slow = shell.add_viewer(replay=True)
        await shell.write(
            b"stty -echo; head -c 3000000 /dev/zero | tr '\\0' '\\132'; echo; echo EN''D\n"
        )
        # The viewer read nothing: the reader runs LAG_LIMIT ahead of it, and stops there.
        await wait_for_async(lambda: shell.scrollback.end, 30, "the reader to reach the limit",
                             ready=lambda end: end > 64 * 1024)  # fmt: skip
        reached = shell.scrollback.end
        await asyncio.sleep(0.5)  # time for it to run on, were it not held back
        assert shell.scrollback.end == reached < 64 * 1024 + 256 * 1024
        got = 0
        while True:
            begin, data = shell.scrollback.read(slow.cursor, 65536)
            assert begin == slow.cursor, "an attached viewer lost bytes"
            if data:
                got += data.count(b"Z")  # octal 132 is Z: not in the echoed line
                shell.advanced(slow, begin + len(data))
                if b"END" in data:
                    break
                continue
            await shell.changed(timeout=5.0)
        assert got == 3_000_000
        shell.remove_viewer(slow)
        # Nobody attached: output never blocks, the ring keeps the latest megabyte.
        await shell.write(b"head -c 2500000 /dev/zero | tr '\\0' y; echo DO''NE\n")

        async def tail() -> bytes:
            data = shell.scrollback.read(shell.scrollback.end - 100, 100)[1]
            if b"DONE" not in data:
                await shell.changed(timeout=1.0)
            return data

        await wait_for_async(tail, 60, "DONE at the end of the scrollback",
                             ready=lambda data: b"DONE" in data, interval=0)  # fmt: skip
        assert shell.scrollback.end - shell.scrollback.start == shell.scrollback.capacity
        await shell.signal("INT")
        await shell.hang_up()
        await wait_for_async(lambda: not shell.running, 10, "the shell to end")
        assert shell.info.state == "exited"


def _service(client: AgentClient, tmp_path: Path, spec: ServiceSpec) -> Service:
    async def emit(*_args: Any, **_kwargs: Any) -> None:
        return None

    return Service(
        "sb-test",
        spec.validate(),
        ServiceStatus(),
        ServiceLog(tmp_path / "logs", spec.name),
        environment=lambda: {"FROM_ENGINE": "1"},
        current_agent=lambda: client,
        on_change=lambda _service: None,
        emit=emit,
    )


@async_test
async def test_service_readiness_logs_and_stop(tmp_path: Path) -> None:
    async with client_for(tmp_path) as (_, client):
        ready = tmp_path / "svc.ready"
        spec = ServiceSpec("svc", ["sh", "-c", f'echo "out $FROM_ENGINE"; echo err >&2; '
                                   f"sleep 0.5; touch {ready}; exec sleep 300"],
                           probe=Probe("file", str(ready)), interval_ms=20)  # fmt: skip
        service = _service(client, tmp_path, spec)
        waiter = service.expect_ready()
        started = time.monotonic()
        await service.spawn(client)
        await asyncio.wait_for(waiter, 20)
        assert time.monotonic() - started >= 0.5
        assert service.status.state == "running" and service.status.ready
        # Written before the ready file, but the log takes the output in on its own schedule.
        await wait_for_async(lambda: [(x.stream, x.text) for x in service.log.read()], 20,
                             "both output lines in the service log",
                             ready=lambda lines: ("stdout", "out 1") in lines
                             and ("stderr", "err") in lines)  # fmt: skip
        pid = service.status.pid
        await service.stop(grace_s=2.0)
        assert service.status.state == "stopped"
        await wait_for_async(lambda: not os.path.exists(f"/proc/{pid}"), 10,
                             f"the stopped service's process {pid} to be reaped")  # fmt: skip


@async_test
async def test_service_not_ready_and_restart_on_failure(tmp_path: Path) -> None:
    async with client_for(tmp_path) as (_, client):
        spec = ServiceSpec("late", ["sh", "-c", "echo waiting; exec sleep 300"],
                           probe=Probe("tcp", f"127.0.0.1:{_closed_port()}"),
                           ready_timeout_s=1.0, interval_ms=50)  # fmt: skip
        service = _service(client, tmp_path, spec)
        waiter = service.expect_ready()
        await service.spawn(client)
        with pytest.raises(NotReady) as info:
            await asyncio.wait_for(waiter, 20)
        assert "not ready after 1s" in str(info.value) and "refused" in str(info.value).lower()
        error = service.not_ready_error(str(info.value))
        assert "stdout: waiting" in error.message
        await service.stop(grace_s=1.0)

        crash = ServiceSpec("crash", ["sh", "-c", "echo run; exit 3"], restart="on-failure")
        flaky = _service(client, tmp_path, crash)
        await flaky.spawn(client)
        await wait_for_async(lambda: flaky.status.restarts, 30, "two restarts",
                             ready=lambda restarts: restarts >= 2)  # fmt: skip

        def runs() -> list[object]:
            return [x for x in flaky.log.read() if x.text == "run"]

        # The third run's output may still be on its way when the restart count moves.
        await wait_for_async(lambda: len(runs()), 30, "the third run's output",
                             ready=lambda count: count >= 3)  # fmt: skip
        await flaky.stop()
        assert flaky.status.state == "stopped"
        assert len(runs()) >= 3
