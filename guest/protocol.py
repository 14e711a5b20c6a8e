"""Wire format shared by the guest agent and the engine (stdlib only: it runs in the guest).

Frame = 9-byte header + payload::

    u32 length of payload (big endian) | u8 kind | u32 channel

Kinds:
  CTRL   payload is UTF-8 JSON: requests, replies and events.
  DATA   payload[0] is the stream (0 stdin, 1 stdout/pty, 2 stderr); the rest are raw bytes.
  WINDOW payload is a u32: bytes of DATA credit the receiver grants on that channel.

Channel 0 carries the handshake (``{"op": "hello", "version": N}`` both ways). Every other
channel is one request opened by the engine with a CTRL ``{"op": ...}``; the agent answers on
the same channel with ``{"ok": true, ...}`` or ``{"ok": false, "error": ..., "code": ...}``
and, for streaming operations, DATA, WINDOW and a final CTRL ``{"event": "exit", ...}``.

Flow control: each side may have at most the granted credit of unacknowledged DATA bytes in
flight per channel (``INITIAL_WINDOW`` at open); the receiver sends WINDOW as it consumes.
A burst therefore back-pressures the process producing it instead of flooding the channel.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = 1
HEADER = struct.Struct("!IBI")
MAX_PAYLOAD = 1 << 20
INITIAL_WINDOW = 256 * 1024

CTRL = 1
DATA = 2
WINDOW = 3

STDIN = 0
STDOUT = 1
STDERR = 2


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame."""


@dataclass(frozen=True, slots=True)
class Frame:
    kind: int
    channel: int
    payload: bytes

    def json(self) -> dict[str, Any]:
        value = json.loads(self.payload.decode("utf-8"))
        if not isinstance(value, dict):
            raise ProtocolError("CTRL payload is not a JSON object")
        return value

    @property
    def stream(self) -> int:
        return self.payload[0]

    @property
    def data(self) -> bytes:
        return self.payload[1:]

    @property
    def credit(self) -> int:
        return int(struct.unpack("!I", self.payload)[0])


def encode(kind: int, channel: int, payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(len(payload), kind, channel) + payload


def encode_ctrl(channel: int, message: dict[str, Any]) -> bytes:
    return encode(CTRL, channel, json.dumps(message, separators=(",", ":")).encode("utf-8"))


def encode_data(channel: int, stream: int, data: bytes) -> bytes:
    return encode(DATA, channel, bytes((stream,)) + data)


def encode_window(channel: int, credit: int) -> bytes:
    return encode(WINDOW, channel, struct.pack("!I", credit))


class Decoder:
    """Incremental decoder: feed bytes as they arrive, take whole frames out."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[Frame]:
        self._buffer += chunk
        frames: list[Frame] = []
        while len(self._buffer) >= HEADER.size:
            length, kind, channel = HEADER.unpack_from(self._buffer)
            if length > MAX_PAYLOAD or kind not in (CTRL, DATA, WINDOW):
                raise ProtocolError(f"bad frame header kind={kind} length={length}")
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            frames.append(Frame(kind, channel, bytes(self._buffer[HEADER.size : end])))
            del self._buffer[:end]
        return frames


# --- helpers (additions; the frame layout above is fixed) ---------------------------------

#: Largest DATA payload either side produces; well under MAX_PAYLOAD so that one stream cannot
#: hog the link for long and a torn frame costs little.
DATA_CHUNK = 64 * 1024

#: Every hello (request and reply) is a CTRL frame on channel 0 whose JSON starts with this, so a
#: reader that lost track of frame boundaries can find the start of a new session by scanning.
HELLO_PREFIX = b'{"op":"hello"'
_HELLO_MARK = bytes((CTRL,)) + (0).to_bytes(4, "big") + HELLO_PREFIX
_LENGTH_SIZE = 4


def encode_hello(message: dict[str, Any]) -> bytes:
    """CTRL frame on channel 0 with ``"op": "hello"`` first, as ``ResyncDecoder`` expects."""
    ordered: dict[str, Any] = {"op": "hello"}
    ordered.update((k, v) for k, v in message.items() if k != "op")
    return encode_ctrl(0, ordered)


def data_credit(frame: Frame) -> int:
    """Flow-control cost of a DATA frame: its raw bytes, without the stream byte."""
    return max(len(frame.payload) - 1, 0)


class ResyncDecoder(Decoder):
    """Decoder that survives a torn byte stream by realigning on the next hello frame.

    The link can lose the middle of a frame: an engine restarts mid-write, or the VM is
    snapshotted and resumed under a new QEMU with a new peer. A new peer always starts with a
    hello, so while ``synced`` is False the input is scanned for a hello frame header and
    everything before it is dropped. A header that cannot be valid also drops sync instead of
    raising. ``synced`` starts False: the first frame of any session is a hello.

    With ``realign_on_hello`` (the agent's side), a chunk that starts with a hello frame while a
    frame is still incomplete also drops the incomplete frame: after a snapshot restore the old
    peer's torn frame would otherwise swallow the new peer's hello. ``feed`` must then be called
    once per read, since the new peer's first bytes begin a read; a payload byte sequence that
    mimics a hello header exactly at a read boundary is not a practical concern.
    """

    def __init__(self, synced: bool = False, realign_on_hello: bool = False) -> None:
        super().__init__()
        self.synced = synced
        self.realign_on_hello = realign_on_hello
        self.discarded = 0  # bytes dropped while resyncing, for diagnostics
        self.desyncs = 0  # times a bad header dropped sync
        self.realigned = 0  # torn frames dropped because a hello began a new read

    def lose_sync(self) -> None:
        self.discarded += len(self._buffer)
        self._buffer.clear()
        self.synced = False

    def _scan(self) -> bool:
        buf = self._buffer
        start = 0
        while True:
            at = buf.find(_HELLO_MARK, start)
            if at < 0:
                # Keep a tail that may be the beginning of a mark split across chunks.
                keep = len(_HELLO_MARK) + _LENGTH_SIZE - 1
                drop = max(len(buf) - keep, 0)
                self.discarded += drop
                del buf[:drop]
                return False
            frame_start = at - _LENGTH_SIZE
            if frame_start >= 0:
                length = int.from_bytes(buf[frame_start:at], "big")
                if len(HELLO_PREFIX) <= length <= MAX_PAYLOAD:
                    self.discarded += frame_start
                    del buf[:frame_start]
                    self.synced = True
                    return True
            start = at + 1

    def _starts_with_hello(self, chunk: bytes) -> bool:
        mark_end = _LENGTH_SIZE + len(_HELLO_MARK)
        if len(chunk) < mark_end or chunk[_LENGTH_SIZE:mark_end] != _HELLO_MARK:
            return False
        return len(HELLO_PREFIX) <= int.from_bytes(chunk[:_LENGTH_SIZE], "big") <= MAX_PAYLOAD

    def feed(self, chunk: bytes) -> list[Frame]:
        if self.realign_on_hello and self._buffer and self._starts_with_hello(chunk):
            self.realigned += 1
            self.discarded += len(self._buffer)
            self._buffer.clear()
            self.synced = True
        self._buffer += chunk
        frames: list[Frame] = []
        while True:
            if not self.synced and not self._scan():
                break
            if len(self._buffer) < HEADER.size:
                break
            length, kind, channel = HEADER.unpack_from(self._buffer)
            if length > MAX_PAYLOAD or kind not in (CTRL, DATA, WINDOW):
                self.desyncs += 1
                self.synced = False
                continue
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            frames.append(Frame(kind, channel, bytes(self._buffer[HEADER.size : end])))
            del self._buffer[:end]
        return frames
