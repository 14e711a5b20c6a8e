"""The guest agent and the engine's AgentClient, end to end over real sockets and processes.

The agent runs on the host as ``python -m guest.agent --connect unix:PATH``. ``FakeChardev``
stands in for QEMU's virtio-serial chardev: the engine connects to ``ctl.sock``, the agent to
``guest.sock``, and when the engine hangs up the agent's link is cut too, which is what the
guest sees when no host is connected (reads return EOF). GROVE_AGENT_TEST_MODE keeps the host
clock, hostname and power state untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import hashlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_for_async

from engine.agent import AgentClient, AgentError
from guest.protocol import (
    CTRL,
    HEADER,
    INITIAL_WINDOW,
    PROTOCOL_VERSION,
    ResyncDecoder,
    encode,
    encode_ctrl,
    encode_data,
    encode_hello,
)

REPO = Path(__file__).resolve().parents[1]
AGENT_PYTHON = os.environ.get("GROVE_AGENT_PYTHON", sys.executable)

pytestmark = pytest.mark.timeout(120)


def async_test(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


# -- harness -------------------------------------------------------------------------------


class FakeChardev:
    """QEMU's ``-chardev socket,server=on`` plus the guest side of the virtio port."""

    def __init__(self, directory: Path) -> None:
        self.ctl_path = directory / "ctl.sock"
        self.guest_path = directory / "guest.sock"
        self._guests: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self._one_engine = asyncio.Lock()  # a chardev serves one client at a time
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start_guest_side(self) -> None:
        self._servers.append(
            await asyncio.start_unix_server(self._on_guest, path=str(self.guest_path))
        )

    async def start_host_side(self) -> None:
        self._servers.append(
            await asyncio.start_unix_server(self._on_host, path=str(self.ctl_path))
        )

    async def _on_guest(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._guests.put((reader, writer))

    async def _on_host(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            async with self._one_engine:
                while True:
                    # Until the guest side is there, the engine's bytes wait in its socket.
                    guest_reader, guest_writer = await self._guests.get()
                    to_guest = asyncio.create_task(_pump(reader, guest_writer))
                    to_host = asyncio.create_task(_pump(guest_reader, writer))
                    await asyncio.wait([to_guest, to_host], return_when=asyncio.FIRST_COMPLETED)
                    to_guest.cancel()
                    to_host.cancel()
                    guest_writer.close()
                    if to_guest.done() and not to_guest.cancelled():
                        break  # the engine hung up: the guest sees the host disconnect
                    # The guest closed its end (agent died or restarted): like a virtio port,
                    # the host side stays connected and the next guest process takes over.
            writer.close()
        finally:
            self._tasks.discard(task)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        while not self._guests.empty():
            self._guests.get_nowait()[1].close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        while data := await reader.read(256 * 1024):
            writer.write(data)
            await writer.drain()


class Agent:
    def __init__(self, proc: subprocess.Popen[bytes], chardev: FakeChardev, log: Path) -> None:
        self.proc = proc
        self.chardev = chardev
        self.log_path = log

    async def connect(self, timeout: float = 10.0) -> AgentClient:
        return await AgentClient.connect(self.chardev.ctl_path, timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _drop_cap_sys_admin() -> None:
    # Runs in the child before exec: without CAP_SYS_ADMIN in the bounding set, root's exec
    # does not get it back, so the RNG ioctls fail as for an unprivileged agent.
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_sys_admin = 24, 21
    if libc.prctl(pr_capbset_drop, cap_sys_admin, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")


@contextlib.asynccontextmanager
async def running_agent(
    tmp_path: Path,
    *,
    env: dict[str, str] | None = None,
    drop_sys_admin: bool = False,
    host_side: bool = True,
) -> AsyncIterator[Agent]:
    chardev = FakeChardev(tmp_path)
    await chardev.start_guest_side()
    if host_side:
        await chardev.start_host_side()
    log_path = tmp_path / "agent.log"
    agent_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "GROVE_AGENT_TEST_MODE": "1",
        "GROVE_AGENT_LOG": "debug",
        **(env or {}),
    }
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [AGENT_PYTHON, "-m", "guest.agent", "--connect", f"unix:{chardev.guest_path}"],
            cwd=REPO,
            env=agent_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            preexec_fn=_drop_cap_sys_admin if drop_sys_admin and os.geteuid() == 0 else None,
        )
    agent = Agent(proc, chardev, log_path)
    try:
        yield agent
    finally:
        # SIGTERM makes the agent kill its sessions' process groups before exiting. A test may
        # have replaced the process (agent restart), so stop whichever is current.
        proc = agent.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        await chardev.close()


@contextlib.asynccontextmanager
async def client_for(tmp_path: Path, **kwargs: Any) -> AsyncIterator[tuple[Agent, AgentClient]]:
    async with running_agent(tmp_path, **kwargs) as agent:
        client = await agent.connect()
        try:
            yield agent, client
        finally:
            await client.close()


def _comm(pid: int) -> str:
    """The process's command name (it changes at exec); "" once it is gone."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


# -- protocol helpers (no processes) ---------------------------------------------------------


def test_resync_decoder_skips_stale_bytes_until_hello() -> None:
    hello = encode_hello({"version": 1, "nonce": "n"})
    ping = encode_ctrl(5, {"op": "ping"})
    torn = encode_data(3, 1, b"x" * 100)[:40]  # a frame cut by a disconnect
    decoder = ResyncDecoder()
    frames = []
    stream = torn + b"\x00garbage" + hello + ping
    for i in range(0, len(stream), 7):  # arbitrary chunking
        frames += decoder.feed(stream[i : i + 7])
    assert [(f.kind, f.channel) for f in frames] == [(CTRL, 0), (CTRL, 5)]
    assert frames[0].json()["nonce"] == "n"
    assert decoder.discarded == len(torn) + len(b"\x00garbage")


def test_resync_decoder_realigns_when_a_read_starts_with_hello() -> None:
    # After a snapshot restore the old engine's torn frame is still in the decoder; the new
    # engine's hello arrives as a new read and must not be swallowed as payload.
    decoder = ResyncDecoder(synced=True, realign_on_hello=True)
    assert decoder.feed(encode_data(3, 0, b"y" * 4000)[:1000]) == []
    frames = decoder.feed(encode_hello({"version": 1, "nonce": "new"}))
    assert [f.json().get("nonce") for f in frames] == ["new"]
    assert decoder.realigned == 1
    # Without the option (the engine side) the bytes are taken as payload, as framed.
    plain = ResyncDecoder(synced=True)
    assert plain.feed(encode_data(3, 0, b"y" * 40)[:20]) == []
    swallowed = plain.feed(encode_hello({"version": 1}))
    assert [f.kind for f in swallowed] == [2]  # the hello became the torn frame's payload


def test_resync_decoder_bad_header_drops_sync() -> None:
    decoder = ResyncDecoder(synced=True)
    bad = HEADER.pack(4, 9, 1) + b"abcd"
    assert decoder.feed(bad + encode_ctrl(2, {"op": "ping"})) == []
    assert decoder.desyncs == 1 and not decoder.synced
    frames = decoder.feed(encode_hello({"version": 1}))
    assert len(frames) == 1 and decoder.synced


# -- basics ----------------------------------------------------------------------------------


@async_test
async def test_hello_and_ping_latency(tmp_path: Path) -> None:
    async with client_for(tmp_path) as (agent, client):
        assert client.hello is not None
        assert client.hello.version == PROTOCOL_VERSION
        assert client.hello.pid == agent.proc.pid
        assert client.hello.sessions == ()
        for _ in range(20):
            await client.ping()
        samples = [await client.ping() for _ in range(200)]
        median_ms = statistics.median(samples) * 1000
        p95_ms = sorted(samples)[int(len(samples) * 0.95)] * 1000
        print(f"\nping over relay: median {median_ms:.3f} ms, p95 {p95_ms:.3f} ms")
        # The 1 ms target is measured by bench/ on a quiet machine; this bound only catches a
        # round trip that waits on a timer or a poll (>= 10 ms), even on a loaded one.
        assert median_ms < 5.0, f"ping median {median_ms:.2f} ms: is something polling?"


@async_test
async def test_exec_exit_codes(tmp_path: Path) -> None:
    async with client_for(tmp_path) as (_, client):
        assert (await client.run(["true"])).exit_code == 0
        result = await client.run(["sh", "-c", "exit 3"])
        assert (result.exit_code, result.signal, result.timed_out) == (3, None, False)
        assert result.duration_ms > 0
        samples = []
        for _ in range(20):
            started = time.perf_counter()
            await client.run(["true"])
            samples.append(time.perf_counter() - started)
        print(f"\nexec round trip (true): median {statistics.median(samples) * 1000:.2f} ms")


@async_test
async def test_stdout_stderr_separation(tmp_path: Path) -> None:
    async with client_for(tmp_path) as (_, client):
        result = await client.run(["sh", "-c", "echo out; echo err >&2; echo out2"])
        assert result.stdout == b"out\nout2\n"
        assert result.stderr == b"err\n"


@async_test
async def test_output_is_live_not_buffered(tmp_path: Path) -> None:
    async with client_for(tmp_path) as (_, client):
        handle = await client.exec(["sh", "-c", "echo first; sleep 5; echo second"])
        started = time.monotonic()
        async for stream, data in handle.output():
            assert (stream, data) == (1, b"first\n")
            break
        assert time.monotonic() - started < 2.0
        await handle.signal("KILL")
        status = await handle.wait()
        assert status.signal == "KILL"


@async_test
async def test_binary_safe_output_and_stdin(tmp_path: Path) -> None:
    every_byte = bytes(range(256)) * 64
    blob = tmp_path / "bytes.bin"
    blob.write_bytes(every_byte)
    async with client_for(tmp_path) as (_, client):
        result = await client.run(["cat", str(blob)])
        assert result.stdout == every_byte
        echoed = await client.run(["cat"], stdin=every_byte)
        assert echoed.stdout == every_byte


@async_test
async def test_stdin_round_trip(tmp_path: Path) -> None:
    payload = os.urandom(3 * 1024 * 1024)  # several windows: exercises stdin credit
    async with client_for(tmp_path) as (_, client):
        result = await client.run(["sha256sum"], stdin=payload)
        assert result.stdout.split()[0].decode() == hashlib.sha256(payload).hexdigest()
        handle = await client.exec(["sh", "-c", "read line; echo got:$line"], stdin=True)
        await handle.write_stdin(b"hello\n")
        chunks = [data async for _, data in handle.output()]
        assert b"".join(chunks) == b"got:hello\n"
        assert (await handle.wait()).exit_code == 0
        # Closing stdin is EOF for the process.
        handle = await client.exec(["wc", "-c"], stdin=True)
        await handle.write_stdin(b"12345")
        await handle.close_stdin()
        assert b"".join([d async for _, d in handle.output()]).strip() == b"5"


@async_test
async def test_twenty_concurrent_execs(tmp_path: Path) -> None:
    async with client_for(tmp_path) as (_, client):
        started = time.monotonic()
        results = await asyncio.gather(
            *(client.run(["sh", "-c", f"sleep 0.5; echo {i}; echo e{i} >&2"]) for i in range(20))
        )
        elapsed = time.monotonic() - started
        for i, result in enumerate(results):
            assert result.exit_code == 0
            assert result.stdout == f"{i}\n".encode()
            assert result.stderr == f"e{i}\n".encode()
        assert elapsed < 5.0, f"20 parallel 0.5 s commands took {elapsed:.2f} s"


@async_test
async def test_50mb_burst_intact_with_bounded_buffering(tmp_path: Path) -> None:
    blob = tmp_path / "burst.bin"
    with open(blob, "wb") as f:
        for _ in range(50):
            f.write(os.urandom(1024 * 1024))
    expected = hashlib.sha256(blob.read_bytes()).hexdigest()
    async with client_for(tmp_path) as (_, client):
        started = time.monotonic()
        handle = await client.exec(["cat", str(blob)])
        digest = hashlib.sha256()
        total = 0
        async for stream, data in handle.output():
            assert stream == 1
            digest.update(data)
            total += len(data)
        status = await handle.wait()
        elapsed = time.monotonic() - started
        assert status.exit_code == 0
        assert total == 50 * 1024 * 1024
        assert digest.hexdigest() == expected
        assert handle.peak_buffered <= INITIAL_WINDOW
        print(
            f"\n50 MiB burst: {elapsed:.2f} s ({total / elapsed / 1e6:.0f} MB/s), "
            f"peak engine buffer {handle.peak_buffered // 1024} KiB"
        )


@async_test
async def test_unread_stream_back_pressures_the_process(tmp_path: Path) -> None:
    async with client_for(tmp_path) as (_, client):
        size = 20 * 1024 * 1024
        handle = await client.exec(["head", "-c", str(size), "/dev/zero"])
        # Nothing reads: once the agent has sent the whole window it stops reading the pipe,
        # and the process is stuck on it; the engine holds at most one window.
        await wait_for_async(lambda: handle.buffered, 30, "a full window in the engine",
                             ready=lambda buffered: buffered >= INITIAL_WINDOW)  # fmt: skip
        assert handle.buffered <= INITIAL_WINDOW
        assert not handle.exited
        assert _alive(handle.pid)
        total = 0
        async for _, data in handle.output():
            total += len(data)
        assert total == size
        assert (await handle.wait()).exit_code == 0


# -- failures, timeouts, signals -------------------------------------------------------------


@async_test
async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    async with client_for(tmp_path) as (_, client):
        handle = await client.exec(["sh", "-c", "sleep 300 & echo $!; wait"], timeout_s=0.5)
        out = b""
        async for _, data in handle.output():
            out += data
        status = await handle.wait()
        assert status.timed_out
        assert status.signal == "KILL"
        assert status.exit_code is None
        child = int(out.split()[0])
        await wait_for_async(lambda: not _alive(child), 30,
                             f"the background sleep {child} to die with its group")  # fmt: skip


@async_test
async def test_signal_int(tmp_path: Path) -> None:
    async with client_for(tmp_path) as (_, client):
        handle = await client.exec(["sleep", "30"])
        # The agent answers once the child has exec'd: the signal reaches sleep, not the fork.
        assert _comm(handle.pid) == "sleep"
        await handle.signal("INT")
        status = await handle.wait()
        assert (status.exit_code, status.signal, status.timed_out) == (None, "INT", False)
        with pytest.raises(AgentError) as info:
            await client.request({"op": "signal", "target_channel": 999, "signal": "TERM"})
        assert info.value.code == "no_such_session"


@async_test
async def test_missing_executable_and_bad_cwd(tmp_path: Path) -> None:
    async with client_for(tmp_path) as (_, client):
        with pytest.raises(AgentError) as info:
            await client.exec(["/nonexistent/grove-no-such-binary"])
        assert info.value.code == "not_found"
        assert "\n" not in info.value.message
        with pytest.raises(AgentError) as info:
            await client.exec(["no-such-command-in-path-grove"])
        assert info.value.code == "not_found"
        with pytest.raises(AgentError) as info:
            await client.exec(["true"], cwd="/nonexistent/dir")
        assert info.value.code == "bad_cwd"
        assert "\n" not in info.value.message
        assert (await client.run(["pwd"], cwd=str(tmp_path))).stdout.strip() == str(
            tmp_path
        ).encode()


@async_test
async def test_bad_requests_never_kill_the_agent(tmp_path: Path) -> None:
    async with client_for(tmp_path) as (agent, client):
        bad: list[tuple[dict[str, Any], str]] = [
            ({"op": "frobnicate"}, "unknown_op"),
            ({"no": "op"}, "bad_request"),
            ({"op": "exec", "argv": "ls"}, "bad_request"),
            ({"op": "exec", "argv": []}, "bad_request"),
            ({"op": "exec", "argv": ["true"], "env": {"A": 1}}, "bad_request"),
            ({"op": "exec", "argv": ["true"], "timeout_s": -1}, "bad_request"),
            ({"op": "exec", "argv": ["tr\0ue"]}, "bad_request"),
            ({"op": "signal", "target_channel": 1, "signal": "NOPE"}, "bad_request"),
            ({"op": "restore_identity", "entropy_b64": "!!"}, "bad_request"),
            ({"op": "file_read", "path": "relative"}, "bad_request"),
        ]
        for message, code in bad:
            with pytest.raises(AgentError) as info:
                await client.request(message)
            assert info.value.code == code, message
        # Not JSON at all, and DATA/WINDOW for channels nobody opened.
        client.send_raw(encode(CTRL, 4000, b"{not json"))
        client.send_raw(encode_data(4001, 0, b"stray"))
        client.send_raw(encode(3, 4002, b"\x00\x00\x00\x10"))
        await client.ping()
        assert agent.proc.poll() is None


@async_test
async def test_corrupt_stream_resyncs_on_next_hello(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as agent:
        client = await agent.connect()
        client.send_raw(HEADER.pack(3, 77, 1) + b"bad")

        async def ping_error() -> str:
            try:
                await client.ping()
            except AgentError as exc:
                return exc.code
            return ""

        code = await wait_for_async(ping_error, 30, "the agent to drop the corrupt link")
        assert code in ("protocol", "disconnected")
        await client.close()
        client = await agent.connect()
        await client.ping()
        await client.close()
        assert agent.proc.poll() is None


@async_test
async def test_stale_bytes_before_hello_are_skipped(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as agent:
        reader, writer = await asyncio.open_unix_connection(str(agent.chardev.ctl_path))
        # The tail of a frame from a previous engine, then random junk.
        writer.write(encode_data(7, 0, b"x" * 5000)[100:] + os.urandom(3000))
        client = await AgentClient.from_streams(reader, writer, timeout=10)
        await client.ping()
        await client.close()


@async_test
async def test_version_mismatch(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as agent:
        reader, writer = await asyncio.open_unix_connection(str(agent.chardev.ctl_path))
        writer.write(encode_hello({"version": PROTOCOL_VERSION + 41, "nonce": "v"}))
        decoder = ResyncDecoder()
        frames = []
        while not frames:
            frames = decoder.feed(await asyncio.wait_for(reader.read(65536), 10))
        reply = frames[0].json()
        assert reply["op"] == "hello"
        assert (reply["ok"], reply["code"]) == (False, "version")
        writer.close()


@async_test
async def test_connect_retries_until_the_socket_exists(tmp_path: Path) -> None:
    async with running_agent(tmp_path, host_side=False) as agent:
        connecting = asyncio.create_task(agent.connect(timeout=10))
        await asyncio.sleep(0.4)
        assert not connecting.done()
        await agent.chardev.start_host_side()
        client = await connecting
        await client.ping()
        await client.close()
    with pytest.raises(AgentError) as info:
        await AgentClient.connect(tmp_path / "missing.sock", timeout=0.2)
    assert info.value.code == "unreachable"


# -- reconnects ----------------------------------------------------------------------------


@async_test
async def test_disconnect_keeps_running_process_and_reattach(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as agent:
        client = await agent.connect()
        handle = await client.exec(["sh", "-c", "read line; echo got:$line"], stdin=True)
        channel, pid = handle.channel, handle.pid
        await client.close()
        with pytest.raises(AgentError) as info:
            await handle.wait()
        assert info.value.code == "disconnected"

        client = await agent.connect()
        assert client.hello is not None
        assert client.hello.pid == agent.proc.pid
        sessions = {s.channel: s for s in client.hello.sessions}
        assert sessions[channel].pid == pid
        assert sessions[channel].state == "running"
        assert _alive(pid)
        # New requests get channels that do not collide with the kept session.
        await client.ping()
        handle = await client.attach(channel)
        assert handle.pid == pid
        await handle.write_stdin(b"again\n")
        out = b"".join([d async for _, d in handle.output()])
        assert out == b"got:again\n"
        assert (await handle.wait()).exit_code == 0
        await client.close()


@async_test
async def test_process_exiting_while_detached_reports_on_attach(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as agent:
        client = await agent.connect()
        handle = await client.exec(["sh", "-c", "sleep 0.3; echo bye; exit 7"])
        channel, pid = handle.channel, handle.pid
        await client.close()
        # The agent records the exit status when it reaps the process: once it is gone.
        await wait_for_async(lambda: not os.path.exists(f"/proc/{pid}"), 30,
                             f"the detached process {pid} to exit and be reaped")  # fmt: skip
        client = await agent.connect()
        assert client.hello is not None
        (session,) = client.hello.sessions
        assert (session.channel, session.state) == (channel, "exited")
        assert session.exit is not None and session.exit.exit_code == 7
        handle = await client.attach(channel)
        out = b"".join([d async for _, d in handle.output()])
        assert out == b"bye\n"
        assert (await handle.wait()).exit_code == 7
        await client.close()
        # Collected: the next engine no longer sees it.
        client = await agent.connect()
        assert client.hello is not None and client.hello.sessions == ()
        await client.close()


@async_test
async def test_agent_survives_engine_dropping_mid_burst(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as agent:
        client = await agent.connect()
        handle = await client.exec(["head", "-c", "30000000", "/dev/zero"])
        async for _, _data in handle.output():
            break
        await client.close()
        client = await agent.connect()
        (session,) = client.hello.sessions if client.hello else ()
        handle = await client.attach(session.channel)
        status = await handle.wait()  # discards the rest
        assert status.exit_code == 0
        await client.ping()
        await client.close()


@async_test
async def test_engine_learns_of_an_agent_restart(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as agent:
        client = await agent.connect()
        handle = await client.exec(["sleep", "30"])
        agent.proc.kill()  # the sleep survives as an orphan: clean it up below
        agent.proc.wait()
        os.killpg(handle.pid, signal.SIGKILL)
        # A new agent process opens the port while the engine stays connected.
        with open(tmp_path / "agent2.log", "wb") as log:
            second = subprocess.Popen(
                [
                    AGENT_PYTHON,
                    "-m",
                    "guest.agent",
                    "--connect",
                    f"unix:{agent.chardev.guest_path}",
                ],
                cwd=REPO,
                env={
                    "PYTHONPATH": str(REPO),
                    "GROVE_AGENT_TEST_MODE": "1",
                    "PATH": "/usr/bin:/bin",
                },
                stdout=log,
                stderr=log,
            )
        agent.proc = second  # the harness stops it
        with pytest.raises(AgentError) as info:
            await asyncio.wait_for(handle.wait(), 10)
        assert info.value.code == "agent_restarted"
        await client.close()
        client = await agent.connect()
        assert client.hello is not None and client.hello.pid == second.pid
        await client.ping()
        await client.close()


# -- system ----------------------------------------------------------------------------------


@async_test
async def test_sysinfo_and_sync(tmp_path: Path) -> None:
    async with client_for(tmp_path) as (_, client):
        before = time.time_ns()
        info = await client.sysinfo()
        after = time.time_ns()
        assert info["hostname"] == socket.gethostname()
        assert info["mem_total_kib"] >= info["mem_available_kib"] > 0
        assert len(info["load"]) == 3
        assert info["uptime_s"] > 0
        # The agent read the clock while the call was under way (a second of slack either way).
        assert before - 1e9 <= info["time_ns"] <= after + 1e9, (before, info["time_ns"], after)
        assert info["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        await client.sync()


@async_test
async def test_restore_identity_with_privileges(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for the RNG ioctls")
    hostname = socket.gethostname()
    async with client_for(tmp_path) as (_, client):
        before = time.time_ns()
        reply = await client.restore_identity(os.urandom(64), before + 5_000_000_000, "fork-7")
        took_ms = (time.time_ns() - before) / 1e6
        assert reply["ok"] and reply["reseeded"] is True
        assert reply["dry_run"] is True  # test mode: the host clock and name stay as they are
        # The step is 5 s less however long the request took to reach the agent's clock read.
        assert 5000 - took_ms - 1 <= reply["clock_step_ms"] <= 5000 + 1, (reply, took_ms)
    assert socket.gethostname() == hostname


@async_test
async def test_restore_identity_fails_closed_without_privileges(tmp_path: Path) -> None:
    async with client_for(tmp_path, drop_sys_admin=True) as (agent, client):
        with pytest.raises(AgentError) as info:
            await client.restore_identity(os.urandom(64), time.time_ns(), "fork-8")
        assert info.value.code == "reseed_failed"
        assert "not permitted" in info.value.message.lower()
        await client.ping()
        assert agent.proc.poll() is None


@async_test
async def test_shutdown_in_test_mode_exits_the_agent(tmp_path: Path) -> None:
    async with client_for(tmp_path) as (agent, client):
        sleeper = await client.exec(["sleep", "60"])
        await client.shutdown()
        assert await asyncio.to_thread(agent.proc.wait, 10) == 0
        assert not _alive(sleeper.pid)


@async_test
async def test_orphans_are_reaped(tmp_path: Path) -> None:
    async with client_for(tmp_path) as (agent, client):
        # Fully detached from the pipes, so run() returns while the sleep still runs.
        result = await client.run(["sh", "-c", "(sleep 0.5 >/dev/null 2>&1 & echo $!)"])
        orphan = int(result.stdout)
        # The subshell exited, so the sleep was re-parented: to the agent, a subreaper.
        with open(f"/proc/{orphan}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[1]) == agent.proc.pid
        await wait_for_async(lambda: not os.path.exists(f"/proc/{orphan}"), 30,
                             f"the agent to reap orphan {orphan}")  # fmt: skip


@async_test
async def test_secrets_in_env_never_reach_the_log(tmp_path: Path) -> None:
    secret = "s3cr3t-" + os.urandom(8).hex()
    async with client_for(tmp_path) as (agent, client):
        result = await client.run(["printenv", "API_TOKEN"], env={"API_TOKEN": secret})
        assert result.stdout.strip() == secret.encode()
        with pytest.raises(AgentError):
            await client.exec(["/nonexistent/x"], env={"API_TOKEN": secret})
        with pytest.raises(AgentError):
            await client.request({"op": "exec", "argv": ["true"], "env": {"API_TOKEN": [secret]}})
        # The agent's own variables do not leak into commands.
        env = (await client.run(["env"])).stdout
        assert b"GROVE_AGENT" not in env and b"PYTHONPATH" not in env
    assert "debug" in agent.log()  # debug logging was on
    assert secret not in agent.log()


# -- terminals and files -----------------------------------------------------------------------


@async_test
async def test_pty_exec_and_resize(tmp_path: Path) -> None:
    async with client_for(tmp_path) as (_, client):
        script = "tty; stty size; read x; stty size; kill -INT $$"
        handle = await client.exec(["sh", "-c", script], pty=True, rows=30, cols=100)
        out = b""
        async for stream, data in handle.output():
            assert stream == 1
            out += data
            if b"30 100" in out:
                break
        assert b"/dev/pts/" in out
        await handle.resize(40, 120)
        await handle.write_stdin(b"\n")
        async for _, data in handle.output():
            out += data
        assert b"40 120" in out
        status = await handle.wait()
        assert status.signal == "INT"  # the shell owns the terminal, so ^C semantics work
        for _ in range(3):  # closing stdin sends ^D; fds are released cleanly each time
            handle = await client.exec(["cat"], pty=True)
            await handle.write_stdin(b"abc\n")
            await handle.close_stdin()
            out = b"".join([d async for _, d in handle.output()])
            assert out.count(b"abc") == 2  # the terminal's echo, then cat's copy
            assert (await handle.wait()).exit_code == 0
        assert (await client.run(["echo", "still fine"])).stdout == b"still fine\n"


@async_test
async def test_file_transfer_and_manifest(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha\n")
    (tree / "sub" / "b.bin").write_bytes(bytes(range(256)))
    (tree / "link").symlink_to("a.txt")
    payload = os.urandom(3 * 1024 * 1024 + 17)
    async with client_for(tmp_path) as (_, client):
        target = str(tree / "sub" / "big.bin")
        done = await client.write_file(target, payload, mode=0o600)
        assert done["bytes"] == len(payload)
        assert Path(target).read_bytes() == payload
        assert Path(target).stat().st_mode & 0o777 == 0o600
        assert await client.read_file(target) == payload
        assert await client.read_file(target, offset=10, length=5) == payload[10:15]
        with pytest.raises(AgentError) as info:
            await client.read_file(str(tree / "nope"))
        assert info.value.code == "not_found"
        entries = {e["path"]: e for e in await client.fs_manifest(str(tree))}
        assert set(entries) == {"a.txt", "sub", "link", "sub/b.bin", "sub/big.bin"}
        assert entries["a.txt"]["sha256"] == hashlib.sha256(b"alpha\n").hexdigest()
        assert entries["sub/big.bin"]["size"] == len(payload)
        assert entries["link"] == {**entries["link"], "type": "symlink", "target": "a.txt"}
        assert entries["sub"]["type"] == "dir"


def test_agent_imports_only_what_the_guest_image_ships() -> None:
    """python3-minimal plus json/dataclasses (protocol) and optional ctypes: nothing else."""
    probe = (
        "import sys, guest.agent.__main__ as m; "
        "print('\\n'.join(sorted(n for n in sys.modules if n.split('.')[0] not in "
        "sys.builtin_module_names)))"
    )
    out = subprocess.run(
        [AGENT_PYTHON, "-S", "-c", probe],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    tops = {name.split(".")[0] for name in out}
    forbidden = tops & {"asyncio", "logging", "argparse", "pathlib", "termios", "ctypes"}
    assert not forbidden, f"agent imports heavy or missing modules at startup: {forbidden}"
