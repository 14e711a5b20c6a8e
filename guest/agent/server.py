"""Channels and dispatch: the handshake, request routing, the outbound queue, peer changes.

A peer (an engine connection) can vanish and be replaced at any time, including by a different
QEMU after a snapshot restore: the agent process never notices the VM moved. So the server keeps
sessions across peers; on EOF or a new hello it drops everything in flight (partial frames,
unsent output) and detaches the sessions until the new peer attaches them again.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from ..protocol import (
    CTRL,
    DATA,
    PROTOCOL_VERSION,
    WINDOW,
    Frame,
    ProtocolError,
    ResyncDecoder,
    encode_ctrl,
    encode_hello,
    encode_window,
)
from . import VERSION, log
from .loop import Loop, Timer
from .transport import Transport

Reply = dict[str, Any]
Handler = Callable[[int, dict[str, Any]], Reply | None]

#: Stop reading process output while this much is queued for a slow host, resume below LOW.
OUT_HIGH = 2 * 1024 * 1024
OUT_LOW = 512 * 1024
WRITE_SIZE = 256 * 1024
#: Reconnect probing after a disconnect: fast at first (a restored VM's new host connects within
#: milliseconds), then slow, because a port with edge wakeups needs the timer only as a backstop.
FAST_RETRY_S = 0.005
FAST_RETRY_FOR_S = 2.0
SLOW_RETRY_S = 0.1
EDGE_SLOW_RETRY_S = 0.5
#: Exited sessions nobody attached to are kept for a later engine, up to this many.
MAX_DETACHED_EXITED = 256


class RequestError(Exception):
    """Raised by an op handler to answer ``{"ok": false, "code": ..., "error": ...}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def reply(self) -> Reply:
        return error_reply(self.code, self.message)


def error_reply(code: str, message: str) -> Reply:
    # One line, bounded: messages end up in engine logs and UI status lines.
    line = " ".join(message.split())[:500]
    return {"ok": False, "code": code, "error": line}


class Session:
    """A long-lived operation bound to a channel (exec, PTY, file transfer...)."""

    kind = "session"

    def __init__(self, server: Server, channel: int) -> None:
        self.server = server
        self.channel = channel
        self.attached = True
        self.created = time.monotonic()

    def on_data(self, stream: int, data: bytes) -> None:
        """DATA from the engine on this channel."""

    def on_window(self, credit: int) -> None:
        """The engine granted more DATA credit."""

    def on_room(self) -> None:
        """The outbound queue drained below the low-water mark: output may flow again."""

    def detach(self) -> None:
        """The peer went away: stop producing output, keep running."""
        self.attached = False

    def attach(self) -> None:
        """A new peer takes this session over; must reply on the channel first."""
        raise RequestError("not_attachable", f"a {self.kind} session cannot be attached")

    #: CTRL ops the engine may send on this session's own channel (besides attach).
    controls: frozenset[str] = frozenset()

    def on_control(self, op: str, request: dict[str, Any]) -> None:
        """A CTRL request in ``controls`` on this channel (a transfer's commit or abort)."""

    def describe(self) -> dict[str, Any]:
        return {"channel": self.channel, "kind": self.kind}

    @property
    def done(self) -> bool:
        """Finished and only waiting for a peer to collect the result."""
        return False

    def terminate(self) -> None:
        """The agent is exiting: stop whatever runs."""


class Server:
    def __init__(self, loop: Loop, transport: Transport, *, test_mode: bool = False) -> None:
        self.loop = loop
        self.transport = transport
        self.test_mode = test_mode
        self.ops: dict[str, Handler] = {"ping": lambda _channel, _request: {"ok": True}}
        self.sessions: dict[int, Session] = {}
        self.decoder = ResyncDecoder(realign_on_hello=True)
        self.connected = False
        self.handshaken = False
        self.generation = 0  # bumped on every peer change; late results of old peers are dropped
        self.dropped_frames = 0
        self._peer_nonce: object = None
        self._out = bytearray()
        self._flush_scheduled = False
        self._writer_armed = False
        self._paused = False
        self._watch_fd = -1
        self._retry: Timer | None = None
        self._disconnected_at = time.monotonic()
        self._desyncs_seen = 0
        self._realigned_seen = 0
        self._announced = False
        self.boot_id = _read_text("/proc/sys/kernel/random/boot_id")

    # -- registration --------------------------------------------------------------------

    def register(self, op: str, handler: Handler) -> None:
        self.ops[op] = handler

    def add_session(self, session: Session) -> None:
        self.sessions[session.channel] = session

    def end_session(self, channel: int) -> None:
        self.sessions.pop(channel, None)

    # -- connection state ------------------------------------------------------------------

    def start(self) -> None:
        log.info(f"agent {VERSION} pid {os.getpid()} on {self.transport.name}")
        self._try_connect()

    def _schedule_retry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        waited = time.monotonic() - self._disconnected_at
        if waited < FAST_RETRY_FOR_S:
            delay = FAST_RETRY_S
        else:
            delay = EDGE_SLOW_RETRY_S if self._watch_fd >= 0 else SLOW_RETRY_S
        self._retry = self.loop.call_later(delay, self._try_connect)

    def _try_connect(self) -> None:
        self._retry = None
        if self.connected:
            return
        if self.transport.connect():
            self._on_connected()
            return
        fd = self.transport.fileno()
        if self.transport.edge_wait and fd >= 0 and self._watch_fd != fd:
            # The port polls HUP nonstop while no host is there; edge-triggered we only wake
            # when its state changes (host connects, data arrives).
            self._watch_fd = fd
            self.loop.add_reader(fd, self._try_connect, edge=True)
        self._schedule_retry()

    def _on_connected(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self.connected = True
        fd = self.transport.fileno()
        if self._watch_fd >= 0 and self._watch_fd != fd:
            self.loop.forget(self._watch_fd)
        self._watch_fd = fd
        self.loop.add_reader(fd, self._on_readable)
        log.info("host connected")
        if not self._announced:
            # Tells an engine that was talking to a previous agent process (crash, restart)
            # that its sessions are gone; a fresh engine ignores it until its hello is answered.
            self._announced = True
            self.send(encode_ctrl(0, {"event": "agent_started", "pid": os.getpid()}))
        self._on_readable()

    def _on_disconnected(self, reason: str) -> None:
        if not self.connected:
            return
        log.info(f"host disconnected ({reason}); keeping {len(self.sessions)} session(s)")
        self.connected = False
        self._reset_peer()
        self._writer_armed = False
        self.loop.forget(self._watch_fd)
        self._watch_fd = -1
        self.transport.disconnect()
        self.decoder.lose_sync()
        self._disconnected_at = time.monotonic()
        self._try_connect()

    def _reset_peer(self) -> None:
        """Forget everything addressed to the previous peer; sessions wait for an attach."""
        self.generation += 1
        self.handshaken = False
        self._peer_nonce = None
        self._out.clear()
        if self._writer_armed:
            self.loop.remove_writer(self._watch_fd)
            self._writer_armed = False
        was_paused, self._paused = self._paused, False
        for session in list(self.sessions.values()):
            session.detach()
        self._prune_detached()
        if was_paused:
            for session in list(self.sessions.values()):
                session.on_room()

    def _prune_detached(self) -> None:
        done = [s for s in self.sessions.values() if s.done and not s.attached]
        for session in done[: max(len(done) - MAX_DETACHED_EXITED, 0)]:
            session.terminate()
            self.end_session(session.channel)

    # -- input -----------------------------------------------------------------------------

    def _on_readable(self) -> None:
        for _ in range(16):  # bounded so pipes and timers get their turn under a flood
            if not self.connected:
                return
            data = self.transport.read()
            if data is None:
                return
            if not data:
                self._on_disconnected("eof")
                return
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        frames = self.decoder.feed(data)
        if self.decoder.realigned != self._realigned_seen:
            self._realigned_seen = self.decoder.realigned
            log.warning("dropped a torn frame: a new hello started mid-frame (VM restored?)")
        for frame in frames:
            self._dispatch(frame)
        if self.decoder.desyncs != self._desyncs_seen:
            self._desyncs_seen = self.decoder.desyncs
            log.warning("bad frame header from host; dropping input until the next hello")
            was_handshaken = self.handshaken
            self._reset_peer()
            if was_handshaken:
                self.send(encode_ctrl(0, {"event": "desync", "error": "bad frame header"}))

    def _dispatch(self, frame: Frame) -> None:
        if frame.kind == CTRL:
            if frame.channel == 0:
                self._on_hello(frame)
            elif not self.handshaken:
                self.reply(frame.channel, error_reply("no_hello", "send a hello first"))
            else:
                self._on_request(frame)
            return
        session = self.sessions.get(frame.channel)
        if session is None or not session.attached or not self.handshaken:
            log.debug(f"dropping frame kind {frame.kind} for channel {frame.channel}")
            return
        if frame.kind == DATA:
            if frame.payload:
                session.on_data(frame.stream, frame.data)
        elif frame.kind == WINDOW and len(frame.payload) == 4:
            session.on_window(frame.credit)

    def _on_hello(self, frame: Frame) -> None:
        try:
            message = frame.json()
        except (ValueError, ProtocolError):
            self.send(encode_hello({"ok": False, "code": "bad_request", "error": "bad hello"}))
            return
        if message.get("op") != "hello":
            return  # nothing else is defined on channel 0 from the engine side
        nonce = message.get("nonce")
        if self.handshaken and nonce is not None and nonce == self._peer_nonce:
            # The engine repeats its hello until answered; same nonce, same peer.
            self.send(encode_hello(self._hello_reply(nonce)))
            return
        self._reset_peer()
        version = message.get("version")
        if version != PROTOCOL_VERSION:
            text = f"agent speaks protocol {PROTOCOL_VERSION}, engine sent {version!r}"
            reply: Reply = {"ok": False, "code": "version", "error": text}
            reply["version"] = PROTOCOL_VERSION
            reply["nonce"] = nonce
            self.send(encode_hello(reply))
            return
        self.handshaken = True
        self._peer_nonce = nonce
        self.send(encode_hello(self._hello_reply(nonce)))
        log.info(f"hello from engine; {len(self.sessions)} session(s) to resume")

    def _hello_reply(self, nonce: object) -> Reply:
        return {
            "ok": True,
            "version": PROTOCOL_VERSION,
            "agent": VERSION,
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "boot_id": self.boot_id,
            "nonce": nonce,
            "sessions": [s.describe() for s in self.sessions.values()],
        }

    def _on_request(self, frame: Frame) -> None:
        channel = frame.channel
        try:
            request = frame.json()
        except (ValueError, ProtocolError):
            self.reply(channel, error_reply("bad_request", "request is not a JSON object"))
            return
        op = request.get("op")
        session = self.sessions.get(channel)
        if session is not None:
            if op == "attach":
                self._call(channel, "attach", lambda _c, _r: _attach(session), request)
            elif isinstance(op, str) and op in session.controls:
                self._call(channel, op, lambda _c, r: session.on_control(op, r), request)
            else:
                text = f"channel {channel} belongs to a running {session.kind}"
                self.reply(channel, error_reply("channel_busy", text))
            return
        if not isinstance(op, str):
            self.reply(channel, error_reply("bad_request", "request has no op"))
            return
        handler = self.ops.get(op)
        if handler is None:
            self.reply(channel, error_reply("unknown_op", f"unknown op {op[:64]!r}"))
            return
        if log.enabled("debug"):
            log.debug(f"op {op} on channel {channel}")
        self._call(channel, op, handler, request)

    def _call(self, channel: int, op: str, handler: Handler, request: dict[str, Any]) -> None:
        try:
            reply = handler(channel, request)
        except RequestError as exc:
            reply = exc.reply()
        except Exception as exc:
            # Log the traceback, never the request: it may carry secrets.
            log.error(f"op {op} failed:\n{traceback.format_exc().rstrip()}")
            reply = error_reply("internal", f"{type(exc).__name__}: {exc}")
        if reply is not None:
            self.reply(channel, reply)

    # -- output ----------------------------------------------------------------------------

    def can_send(self) -> bool:
        """Whether sessions should produce output now (a peer listens and the queue has room)."""
        return self.connected and self.handshaken and not self._paused

    def out_pending(self) -> int:
        """Bytes queued for the host (safe to read from worker threads)."""
        return len(self._out)

    def send(self, frame: bytes) -> None:
        if not self.connected:
            self.dropped_frames += 1  # nobody to tell; sessions hold their state for a peer
            return
        self._out += frame
        if len(self._out) > OUT_HIGH:
            self._paused = True
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def reply(self, channel: int, message: Reply) -> None:
        try:
            frame = encode_ctrl(channel, message)
        except ProtocolError as exc:
            frame = encode_ctrl(channel, error_reply("internal", str(exc)))
        self.send(frame)

    def window(self, channel: int, credit: int) -> None:
        if credit > 0:
            self.send(encode_window(channel, credit))

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self.connected:
            return
        out = self._out
        while out:
            try:
                with memoryview(out) as view:
                    written = self.transport.write(view[:WRITE_SIZE])
            except OSError as exc:
                self._on_disconnected(f"write: {exc.strerror or exc}")
                return
            if written is None:
                if not self._writer_armed:
                    self._writer_armed = True
                    self.loop.add_writer(self._watch_fd, self._flush)
                return
            del out[:written]
        if self._writer_armed:
            self._writer_armed = False
            self.loop.remove_writer(self._watch_fd)
        if self._paused and len(out) < OUT_LOW:
            self._paused = False
            for session in list(self.sessions.values()):
                session.on_room()

    def flush_now(self, timeout: float) -> None:
        """Push queued frames out before something drastic (poweroff, exit)."""
        deadline = time.monotonic() + timeout
        while self._out and self.connected and time.monotonic() < deadline:
            self._flush()
            if self._out:
                time.sleep(0.001)

    # -- blocking work -----------------------------------------------------------------------

    def run_blocking(self, channel: int, op: str, work: Callable[[], Reply]) -> None:
        """Run work on a thread (disk-bound ops) and reply on channel when it is done."""
        generation = self.generation

        def finish(reply: Reply) -> None:
            if generation == self.generation:
                self.reply(channel, reply)

        def run() -> None:
            try:
                reply = work()
            except RequestError as exc:
                reply = exc.reply()
            except Exception as exc:
                log.error(f"op {op} failed:\n{traceback.format_exc().rstrip()}")
                reply = error_reply("internal", f"{type(exc).__name__}: {exc}")
            self.loop.call_soon_threadsafe(lambda: finish(reply))

        threading.Thread(target=run, name=f"op-{op}", daemon=True).start()

    # -- exit --------------------------------------------------------------------------------

    def terminate_sessions(self) -> None:
        for session in list(self.sessions.values()):
            session.terminate()


def _attach(session: Session) -> None:
    session.attach()


def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""
