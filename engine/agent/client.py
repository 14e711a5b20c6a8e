"""Engine-side client of the guest agent protocol (see guest/protocol.py) over asyncio streams.

One connection multiplexes many requests, each on its own channel. Output streams are
flow-controlled: the client grants WINDOW credit only as the consumer takes data out of a
handle, so a stream nobody reads stops its guest process (its pipe fills) instead of growing a
buffer in the engine; per channel at most ``INITIAL_WINDOW`` bytes wait here.

The byte stream may carry stale data from a previous connection (the agent's port outlives
engines, and a restored VM resumes mid-write), so the handshake scans for the hello reply that
echoes this connection's random nonce and ignores everything before it.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guest.protocol import (
    CTRL,
    DATA,
    DATA_CHUNK,
    INITIAL_WINDOW,
    PROTOCOL_VERSION,
    STDIN,
    STDOUT,
    WINDOW,
    Frame,
    ProtocolError,
    ResyncDecoder,
    encode_ctrl,
    encode_data,
    encode_hello,
    encode_window,
)

__all__ = [
    "AgentClient",
    "AgentError",
    "ExecHandle",
    "ExecResult",
    "ExitStatus",
    "HelloInfo",
    "SessionInfo",
]

READ_SIZE = 256 * 1024
#: Give credit back in batches: one WINDOW frame per this many consumed bytes.
GRANT_THRESHOLD = INITIAL_WINDOW // 4
#: The hello is repeated this often until answered (a repeat with the same nonce is harmless).
HELLO_RETRY_S = 1.0
CONNECT_RETRY_S = 0.02
DEFAULT_TIMEOUT_S = 30.0
_MAX_CHANNEL = (1 << 32) - 1


class AgentError(Exception):
    """A request failed: ``code`` is machine-readable (``disconnected``, ``timeout``,
    ``not_found``, ``bad_cwd``, ``reseed_failed``, ``unknown_op``...), ``message`` one line."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message or code


@dataclass(frozen=True, slots=True)
class ExitStatus:
    exit_code: int | None
    signal: str | None
    timed_out: bool
    duration_ms: float

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> ExitStatus:
        code = event.get("exit_code")
        sig = event.get("signal")
        return cls(
            exit_code=int(code) if code is not None else None,
            signal=str(sig) if sig is not None else None,
            timed_out=bool(event.get("timed_out", False)),
            duration_ms=float(event.get("duration_ms", 0.0)),
        )

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True, slots=True)
class ExecResult:
    exit_code: int | None
    stdout: bytes
    stderr: bytes
    duration_ms: float
    signal: str | None
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session the agent kept from an earlier connection (listed in its hello)."""

    channel: int
    kind: str
    pid: int | None
    argv0: str
    state: str
    pty: bool
    exit: ExitStatus | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionInfo:
        exit_info = data.get("exit")
        pid = data.get("pid")
        return cls(
            channel=int(data["channel"]),
            kind=str(data.get("kind", "")),
            pid=int(pid) if pid is not None else None,
            argv0=str(data.get("argv0", "")),
            state=str(data.get("state", "")),
            pty=bool(data.get("pty", False)),
            exit=ExitStatus.from_event(exit_info) if isinstance(exit_info, dict) else None,
        )


@dataclass(frozen=True, slots=True)
class HelloInfo:
    version: int
    agent: str
    pid: int
    hostname: str
    boot_id: str
    sessions: tuple[SessionInfo, ...]

    @classmethod
    def from_reply(cls, reply: Mapping[str, Any]) -> HelloInfo:
        sessions = reply.get("sessions") or []
        return cls(
            version=int(reply.get("version", 0)),
            agent=str(reply.get("agent", "")),
            pid=int(reply.get("pid", 0)),
            hostname=str(reply.get("hostname", "")),
            boot_id=str(reply.get("boot_id", "")),
            sessions=tuple(SessionInfo.from_dict(s) for s in sessions if isinstance(s, dict)),
        )


def _reply_error(reply: Mapping[str, Any]) -> AgentError:
    return AgentError(str(reply.get("code") or "error"), str(reply.get("error") or ""))


class _Channel:
    """Receives the frames of one channel."""

    def on_frame(self, frame: Frame) -> None:
        raise NotImplementedError

    def fail(self, error: AgentError) -> None:
        raise NotImplementedError

    def control(self, frame: Frame) -> dict[str, Any] | None:
        """A CTRL frame's message; None (and the channel failed) when it cannot be read."""
        try:
            message: dict[str, Any] = frame.json()
        except (ValueError, ProtocolError):
            self.fail(AgentError("protocol", "unreadable reply"))
            return None
        return message


class _Call(_Channel):
    """A request with exactly one reply."""

    def __init__(self) -> None:
        self.reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    def on_frame(self, frame: Frame) -> None:
        if frame.kind == CTRL and not self.reply.done():
            try:
                self.reply.set_result(frame.json())
            except (ValueError, ProtocolError):
                self.reply.set_exception(AgentError("protocol", "unreadable reply"))

    def fail(self, error: AgentError) -> None:
        if not self.reply.done():
            self.reply.set_exception(error)


class _Stream(_Channel):
    """A request with a reply, then DATA and events until a final event (file ops)."""

    def __init__(self, client: AgentClient, channel: int) -> None:
        self.client = client
        self.channel = channel
        loop = asyncio.get_running_loop()
        self.reply: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.events: asyncio.Queue[dict[str, Any] | AgentError] = asyncio.Queue()
        self.data = bytearray()
        self.credit = INITIAL_WINDOW
        self.credit_changed = asyncio.Event()
        self._to_grant = 0

    def on_frame(self, frame: Frame) -> None:
        if frame.kind == CTRL:
            message = self.control(frame)
            if message is None:
                return
            if not self.reply.done():
                self.reply.set_result(message)
            else:
                self.events.put_nowait(message)
        elif frame.kind == DATA:
            # Collected at once, so credit goes straight back.
            self.data += frame.data
            self._to_grant += len(frame.data)
            if self._to_grant >= GRANT_THRESHOLD:
                self.client._grant(self.channel, self._to_grant)
                self._to_grant = 0
        elif frame.kind == WINDOW and len(frame.payload) == 4:
            self.credit += frame.credit
            self.credit_changed.set()

    def fail(self, error: AgentError) -> None:
        if not self.reply.done():
            self.reply.set_exception(error)
        self.events.put_nowait(error)
        self.credit_changed.set()

    async def next_event(self) -> dict[str, Any]:
        item = await self.events.get()
        if isinstance(item, AgentError):
            raise item
        return item


class ExecHandle(_Channel):
    """A running command. Read ``output()`` (or call ``wait()`` to discard it), then ``wait()``.

    Output waits here only up to the window granted to the agent; while nobody iterates
    ``output()`` the guest process blocks on a full pipe. ``wait()`` called without ever
    iterating ``output()`` discards the output so the process cannot stall; after iterating
    part of it, call ``discard_output()`` before ``wait()`` or keep reading.
    """

    def __init__(self, client: AgentClient, channel: int) -> None:
        self._client = client
        self.channel = channel
        self.pid = 0
        loop = asyncio.get_running_loop()
        self._started: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._exit: asyncio.Future[ExitStatus] = loop.create_future()
        self._exit.add_done_callback(_consume_exception)
        self._chunks: collections.deque[tuple[int, bytes]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._error: AgentError | None = None
        self._eof = False
        self._reading = False
        self._discard = False
        self._to_grant = 0
        self._stdin_credit = INITIAL_WINDOW
        self._credit_changed = asyncio.Event()
        self._stdin_closed = False
        #: Bytes received but not yet consumed, and the most there ever were (for tests and
        #: metering: bounded by the window).
        self.buffered = 0
        self.peak_buffered = 0

    # -- frames from the agent ---------------------------------------------------------------

    def on_frame(self, frame: Frame) -> None:
        if frame.kind == DATA:
            size = len(frame.payload) - 1
            if self._discard:
                self._consumed(size)
                return
            self._chunks.append((frame.stream, frame.data))
            self.buffered += size
            self.peak_buffered = max(self.peak_buffered, self.buffered)
            self._wakeup.set()
        elif frame.kind == WINDOW and len(frame.payload) == 4:
            self._stdin_credit += frame.credit
            self._credit_changed.set()
        elif frame.kind == CTRL:
            try:
                message = frame.json()
            except (ValueError, ProtocolError):
                return
            if not self._started.done():
                if message.get("ok"):
                    self.pid = int(message.get("pid", 0))
                    self._started.set_result(message)
                else:
                    self._started.set_exception(_reply_error(message))
                    self._client._forget(self.channel)
            elif message.get("event") == "exit":
                self._eof = True
                self._stdin_closed = True
                if not self._exit.done():
                    self._exit.set_result(ExitStatus.from_event(message))
                self._client._forget(self.channel)
                self._wakeup.set()
                self._credit_changed.set()

    def fail(self, error: AgentError) -> None:
        self._error = error
        if not self._started.done():
            self._started.set_exception(error)
        if not self._exit.done():
            self._exit.set_exception(error)
        self._wakeup.set()
        self._credit_changed.set()

    # -- flow control ------------------------------------------------------------------------

    def _consumed(self, size: int) -> None:
        if self._eof:
            return
        self._to_grant += size
        if self._to_grant >= GRANT_THRESHOLD:
            self._client._grant(self.channel, self._to_grant)
            self._to_grant = 0

    # -- public API --------------------------------------------------------------------------

    async def output(self) -> AsyncIterator[tuple[int, bytes]]:
        """Yield ``(stream, bytes)`` as the process writes (1 stdout or PTY, 2 stderr)."""
        self._reading = True
        while True:
            while not self._chunks and not self._eof and self._error is None:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._chunks:
                stream, data = self._chunks.popleft()
                self.buffered -= len(data)
                self._consumed(len(data))
                yield stream, data
            elif self._eof:
                return
            elif self._error is not None:
                raise self._error

    def discard_output(self) -> None:
        """Drop queued and future output (granting its credit) so the process never stalls.

        Call it before ``wait()`` when you stopped iterating ``output()`` early.
        """
        self._discard = True
        while self._chunks:
            _, data = self._chunks.popleft()
            self.buffered -= len(data)
            self._consumed(len(data))
        self._wakeup.set()

    async def wait(self) -> ExitStatus:
        if not self._reading:
            self.discard_output()
        return await asyncio.shield(self._exit)

    async def write_stdin(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            while self._stdin_credit <= 0 and not self._stdin_closed and self._error is None:
                self._credit_changed.clear()
                await self._credit_changed.wait()
            if self._error is not None:
                raise self._error
            if self._stdin_closed:
                raise AgentError("stdin_closed", "stdin is closed or the process exited")
            size = min(len(view), self._stdin_credit, DATA_CHUNK)
            self._client._write(encode_data(self.channel, STDIN, bytes(view[:size])))
            self._stdin_credit -= size
            view = view[size:]
            await self._client._drain()

    async def close_stdin(self) -> None:
        if self._stdin_closed:
            return
        self._stdin_closed = True
        self._client._write(encode_data(self.channel, STDIN, b""))
        await self._client._drain()

    async def signal(self, name: str) -> None:
        """Signal the process group: INT, TERM, HUP, KILL, QUIT, USR1, USR2, STOP, CONT."""
        await self._client._call({"op": "signal", "target_channel": self.channel, "signal": name})

    async def resize(self, rows: int, cols: int) -> None:
        """Set a PTY session's window size."""
        message = {"op": "pty_resize", "target_channel": self.channel, "rows": rows, "cols": cols}
        await self._client._call(message)

    @property
    def exited(self) -> bool:
        return self._exit.done()


def _consume_exception(future: asyncio.Future[Any]) -> None:
    # Nobody may ever await a failed exit; keep asyncio from logging it as unretrieved.
    if not future.cancelled():
        future.exception()


class AgentClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = ResyncDecoder()
        self._channels: dict[int, _Channel] = {}
        self._next_channel = 1
        self._closed: AgentError | None = None
        self._nonce = secrets.token_hex(8)
        self._hello: asyncio.Future[dict[str, Any]] | None = None
        self._read_task: asyncio.Task[None] | None = None
        self.hello: HelloInfo | None = None

    # -- connecting --------------------------------------------------------------------------

    @classmethod
    async def connect(cls, path: Path, timeout: float) -> AgentClient:
        """Connect to the agent behind QEMU's chardev socket at path and do the handshake.

        The socket may not exist yet or refuse while QEMU starts: retried until timeout.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(path), limit=READ_SIZE)
                break
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if loop.time() >= deadline:
                    reason = exc.strerror or type(exc).__name__
                    raise AgentError("unreachable", f"agent socket {path}: {reason}") from None
                await asyncio.sleep(CONNECT_RETRY_S)
        return await cls.from_streams(reader, writer, timeout=max(deadline - loop.time(), 0.05))

    @classmethod
    async def from_streams(
        cls,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        timeout: float = 10.0,
    ) -> AgentClient:
        client = cls(reader, writer)
        try:
            await client._handshake(timeout)
        except BaseException:
            await client.close()
            raise
        return client

    async def _handshake(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        self._hello = loop.create_future()
        self._hello.add_done_callback(_consume_exception)
        self._read_task = asyncio.create_task(self._read_loop(), name="agent-reader")
        deadline = loop.time() + timeout
        hello = encode_hello({"version": PROTOCOL_VERSION, "nonce": self._nonce})
        while True:
            self._write(hello)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AgentError("timeout", f"no hello reply from the agent within {timeout:g}s")
            try:
                reply = await asyncio.wait_for(
                    asyncio.shield(self._hello), min(HELLO_RETRY_S, remaining)
                )
                break
            except TimeoutError:
                continue
        if not reply.get("ok"):
            raise _reply_error(reply)
        self.hello = HelloInfo.from_reply(reply)
        used = [s.channel for s in self.hello.sessions]
        self._next_channel = max(used, default=0) + 1

    # -- reading -----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        error = AgentError("disconnected", "the agent connection closed")
        try:
            while True:
                chunk = await self._reader.read(READ_SIZE)
                if not chunk:
                    break
                for frame in self._decoder.feed(chunk):
                    self._dispatch(frame)
                if self._decoder.desyncs:
                    error = AgentError("protocol", "bad frame header from the agent")
                    break
        except AgentError as exc:
            error = exc
        except (OSError, ConnectionError) as exc:
            error = AgentError("disconnected", str(exc))
        except asyncio.CancelledError:
            error = AgentError("disconnected", "client closed")
            self._fail_all(error)
            raise
        self._fail_all(error)

    def _dispatch(self, frame: Frame) -> None:
        if frame.channel == 0:
            if frame.kind != CTRL:
                return
            try:
                message = frame.json()
            except (ValueError, ProtocolError):
                return
            if message.get("op") == "hello":
                # A reply to someone else's hello (stale bytes) does not count.
                waiter = self._hello
                nonce = message.get("nonce")
                if waiter is not None and not waiter.done() and nonce == self._nonce:
                    waiter.set_result(message)
            elif message.get("event") == "desync":
                raise AgentError("protocol", f"agent lost frame sync: {message.get('error')}")
            elif message.get("event") == "agent_started" and self.hello is not None:
                # A new agent process: whatever this connection had open is gone.
                raise AgentError("agent_restarted", f"agent restarted as pid {message.get('pid')}")
            return
        channel = self._channels.get(frame.channel)
        if channel is not None:
            channel.on_frame(frame)

    def _fail_all(self, error: AgentError) -> None:
        if self._closed is None:
            self._closed = error
        if self._hello is not None and not self._hello.done():
            self._hello.set_exception(error)
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            channel.fail(error)
        self._writer.close()

    # -- writing -----------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._closed is not None:
            raise AgentError("disconnected", self._closed.message)
        self._writer.write(data)

    async def _drain(self) -> None:
        try:
            await self._writer.drain()
        except (OSError, ConnectionError) as exc:
            raise AgentError("disconnected", str(exc)) from None

    def _grant(self, channel: int, credit: int) -> None:
        if credit > 0 and self._closed is None and channel in self._channels:
            self._writer.write(encode_window(channel, credit))

    def _allocate(self, handler: _Channel) -> int:
        channel = self._next_channel
        while channel in self._channels or channel == 0:
            channel = channel + 1 if channel < _MAX_CHANNEL else 1
        self._next_channel = channel + 1 if channel < _MAX_CHANNEL else 1
        self._channels[channel] = handler
        return channel

    def _forget(self, channel: int) -> None:
        self._channels.pop(channel, None)

    async def _call(
        self, message: dict[str, Any], timeout: float | None = DEFAULT_TIMEOUT_S
    ) -> dict[str, Any]:
        call = _Call()
        channel = self._allocate(call)
        try:
            self._write(encode_ctrl(channel, message))
            if timeout is None:
                reply = await call.reply
            else:
                reply = await asyncio.wait_for(call.reply, timeout)
        except TimeoutError:
            text = f"{message.get('op')} got no reply in {timeout:g}s"
            raise AgentError("timeout", text) from None
        finally:
            self._forget(channel)
        if not reply.get("ok"):
            raise _reply_error(reply)
        return reply

    # -- requests ----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def request(
        self, message: dict[str, Any], timeout: float | None = DEFAULT_TIMEOUT_S
    ) -> dict[str, Any]:
        """Send any op and return its ``ok`` reply (AgentError otherwise)."""
        return await self._call(message, timeout)

    @property
    def connected(self) -> bool:
        return self._closed is None

    async def ping(self, timeout: float | None = DEFAULT_TIMEOUT_S) -> float:
        """Round trip in seconds."""
        started = time.perf_counter()
        await self._call({"op": "ping"}, timeout)
        return time.perf_counter() - started

    async def sysinfo(self, timeout: float | None = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
        return await self._call({"op": "sysinfo"}, timeout)

    async def restore_identity(
        self,
        entropy: bytes,
        time_ns: int,
        hostname: str,
        timeout: float | None = DEFAULT_TIMEOUT_S,
    ) -> dict[str, Any]:
        """Reseed the guest RNG, step its clock, set its hostname after a snapshot restore.

        Raises AgentError("reseed_failed") unless the guest confirmed the reseed: the caller
        must then fail the sandbox (forks sharing RNG state are not safe).
        """
        message = {
            "op": "restore_identity",
            "entropy_b64": base64.b64encode(entropy).decode("ascii"),
            "time_ns": time_ns,
            "hostname": hostname,
        }
        reply = await self._call(message, timeout)
        if reply.get("reseeded") is not True:
            raise AgentError("reseed_failed", "the agent did not confirm the RNG reseed")
        return reply

    async def sync(self, timeout: float | None = DEFAULT_TIMEOUT_S) -> None:
        await self._call({"op": "sync"}, timeout)

    async def shutdown(self, reboot: bool = False, timeout: float | None = 10.0) -> None:
        """Sync and power the VM off (the agent answers first, then the link drops)."""
        await self._call({"op": "shutdown", "reboot": reboot}, timeout)

    async def exec(
        self,
        argv: Sequence[str],
        env: Mapping[str, str | None] | None = None,
        cwd: str | None = None,
        timeout_s: float | None = None,
        stdin: bool = False,
        *,
        pty: bool = False,
        rows: int = 24,
        cols: int = 80,
        term: str = "xterm-256color",
    ) -> ExecHandle:
        """Start a command; returns once it runs (AgentError not_found / bad_cwd otherwise).

        ``env`` is merged over the guest's default environment (None unsets a variable).
        ``timeout_s`` kills the whole process group. With ``pty`` the command gets a terminal
        (stdin is always open then, output arrives on stream 1 only).
        """
        message: dict[str, Any] = {"op": "exec", "argv": list(argv), "stdin": stdin}
        if env is not None:
            message["env"] = dict(env)
        if cwd is not None:
            message["cwd"] = cwd
        if timeout_s is not None:
            message["timeout_s"] = timeout_s
        if pty:
            message.update(pty=True, rows=rows, cols=cols, term=term, stdin=True)
        handle = ExecHandle(self, 0)
        handle.channel = self._allocate(handle)
        try:
            self._write(encode_ctrl(handle.channel, message))
            await handle._started
        except BaseException:
            self._forget(handle.channel)
            raise
        if not stdin and not pty:
            handle._stdin_closed = True
        return handle

    async def attach(self, channel: int) -> ExecHandle:
        """Take over an exec session listed in ``hello.sessions`` (after a reconnect)."""
        if channel in self._channels:
            raise AgentError("channel_busy", f"channel {channel} is in use on this connection")
        handle = ExecHandle(self, channel)
        self._channels[channel] = handle
        try:
            self._write(encode_ctrl(channel, {"op": "attach"}))
            await handle._started
        except BaseException:
            self._forget(channel)
            raise
        return handle

    async def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str | None] | None = None,
        cwd: str | None = None,
        timeout_s: float | None = None,
        stdin: bytes | None = None,
    ) -> ExecResult:
        """Run a command to completion and collect its output."""
        handle = await self.exec(argv, env, cwd, timeout_s, stdin=stdin is not None)
        feeder: asyncio.Task[None] | None = None
        if stdin is not None:
            feeder = asyncio.create_task(_feed_stdin(handle, stdin))
        out = bytearray()
        err = bytearray()
        try:
            async for stream, data in handle.output():
                (out if stream == STDOUT else err).extend(data)
            status = await handle.wait()
        finally:
            if feeder is not None:
                if not feeder.done():
                    feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError, AgentError):
                    await feeder
        return ExecResult(
            exit_code=status.exit_code,
            stdout=bytes(out),
            stderr=bytes(err),
            duration_ms=status.duration_ms,
            signal=status.signal,
            timed_out=status.timed_out,
        )

    # -- files -------------------------------------------------------------------------------

    async def _open_stream(self, message: dict[str, Any]) -> tuple[_Stream, dict[str, Any]]:
        stream = _Stream(self, 0)
        stream.channel = self._allocate(stream)
        try:
            self._write(encode_ctrl(stream.channel, message))
            reply = await stream.reply
        except BaseException:
            self._forget(stream.channel)
            raise
        if not reply.get("ok"):
            self._forget(stream.channel)
            raise _reply_error(reply)
        return stream, reply

    async def read_file(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        stream, _ = await self._open_stream(
            {"op": "file_read", "path": path, "offset": offset, "length": length}
        )
        try:
            event = await stream.next_event()
        finally:
            self._forget(stream.channel)
        if event.get("event") != "eof":
            raise _reply_error(event)
        data = bytes(stream.data)
        if hashlib.sha256(data).hexdigest() != event.get("sha256"):
            raise AgentError("corrupt", f"{path}: checksum mismatch after transfer")
        return data

    async def write_file(
        self, path: str, data: bytes, mode: int = 0o644, append: bool = False, mkdirs: bool = False
    ) -> dict[str, Any]:
        """Write a guest file (atomically unless appending); returns ``bytes`` and ``sha256``."""
        message = {"op": "file_write", "path": path, "mode": mode, "append": append}
        message["mkdirs"] = mkdirs
        stream, _ = await self._open_stream(message)
        try:
            view = memoryview(data)
            while view:
                while stream.credit <= 0:
                    stream.credit_changed.clear()
                    await stream.credit_changed.wait()
                    if self._closed is not None:
                        raise AgentError("disconnected", self._closed.message)
                size = min(len(view), stream.credit, DATA_CHUNK)
                self._write(encode_data(stream.channel, STDIN, bytes(view[:size])))
                stream.credit -= size
                view = view[size:]
                await self._drain()
            self._write(encode_data(stream.channel, STDIN, b""))
            event = await stream.next_event()
        finally:
            self._forget(stream.channel)
        if event.get("event") != "done":
            raise _reply_error(event)
        if event.get("sha256") != hashlib.sha256(data).hexdigest():
            raise AgentError("corrupt", f"{path}: checksum mismatch after transfer")
        return event

    async def fs_manifest(
        self,
        path: str,
        hash_files: bool = True,
        exclude: Sequence[str] = (),
        one_file_system: bool = True,
        max_depth: int = 0,
    ) -> list[dict[str, Any]]:
        """Entries (path, type, size, mode, uid, gid, mtime_ns, sha256|target) under path;
        max_depth 1 lists only path's own entries (0: the whole tree)."""
        message = {
            "op": "fs_manifest",
            "path": path,
            "hash": hash_files,
            "exclude": list(exclude),
            "one_file_system": one_file_system,
            "max_depth": max_depth,
        }
        stream, _ = await self._open_stream(message)
        entries: list[dict[str, Any]] = []
        try:
            while True:
                event = await stream.next_event()
                kind = event.get("event")
                if kind == "entries":
                    entries.extend(event.get("entries") or [])
                elif kind == "done":
                    return entries
                else:
                    raise _reply_error(event)
        finally:
            self._forget(stream.channel)

    async def stat(self, path: str, timeout: float | None = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
        """lstat of a guest path: path, type (file|dir|symlink|other), size, mode, mtime_ns."""
        return await self._call({"op": "fs_stat", "path": path}, timeout)

    async def remove(self, path: str, timeout: float | None = DEFAULT_TIMEOUT_S) -> None:
        """Unlink a guest file (not a directory)."""
        await self._call({"op": "fs_remove", "path": path}, timeout)

    # -- diagnostics -------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        """Write raw bytes to the link (protocol tests and diagnostics only)."""
        self._write(data)

    async def close(self) -> None:
        if self._read_task is not None and not self._read_task.done():
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._read_task
        self._fail_all(AgentError("disconnected", "client closed"))
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()


async def _feed_stdin(handle: ExecHandle, data: bytes) -> None:
    with contextlib.suppress(AgentError):
        await handle.write_stdin(data)
        await handle.close_stdin()
