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
