"""The resolver a sandbox's guest asks (10.0.2.3 inside its namespace), answered by the engine.

- ``egress``: queries are relayed to the host's own resolver, answers relayed back.
- ``allow=…``: only the allowed names resolve, to the addresses the engine pinned for them;
  every other name is refused, so DNS cannot be used to reach (or leak to) anything else.
- ``published``: every query is refused (fails at once rather than after a timeout).
- ``off``: no answer at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import cast

from engine.net.policy import Mode, NetworkPolicy

log = logging.getLogger(__name__)

TYPE_A = 1
TYPE_AAAA = 28
RCODE_NXDOMAIN = 3
RCODE_REFUSED = 5
UPSTREAM_TIMEOUT_S = 5.0

#: What the responder needs to know at each query: the policy now, and the pinned names.
PolicyView = Callable[[], tuple[NetworkPolicy, dict[str, list[str]]]]


def parse_question(packet: bytes) -> tuple[str, int, int] | None:
    """(name, qtype, end offset of the question) of a standard query, or None."""
    if len(packet) < 12:
        return None
    flags, qdcount = struct.unpack("!2xHH", packet[:6])
    if flags & 0x8000 or qdcount != 1:
        return None
    labels, offset = [], 12
    while True:
        if offset >= len(packet):
            return None
        length = packet[offset]
        offset += 1
        if length == 0:
            break
        if length & 0xC0 or offset + length > len(packet):
            return None  # no compression in a question
        labels.append(packet[offset : offset + length].decode("ascii", "replace").lower())
        offset += length
    if offset + 4 > len(packet):
        return None
    qtype = struct.unpack("!H", packet[offset : offset + 2])[0]
    return ".".join(labels), qtype, offset + 4


def answer(packet: bytes, addresses: list[str], rcode: int = 0) -> bytes:
    """A reply to a query (already parsed): its question, then A/AAAA records for addresses."""
    question = parse_question(packet)
    assert question is not None
    _, qtype, end = question
    records = []
    for text in addresses:
        address = ipaddress.ip_address(text)
        rtype = TYPE_A if address.version == 4 else TYPE_AAAA
        if rtype == qtype:
            records.append(struct.pack("!HHHIH", 0xC00C, rtype, 1, 60, len(address.packed)))
            records[-1] += address.packed
    rd = struct.unpack("!H", packet[2:4])[0] & 0x0100
    flags = 0x8000 | 0x0400 | rd | 0x0080 | rcode  # response, authoritative, RA
    header = packet[:2] + struct.pack("!HHHHH", flags, 1, len(records), 0, 0)
    return header + packet[12:end] + b"".join(records)


def host_resolver() -> tuple[str, int]:
    """The first nameserver of the host's resolv.conf (the engine runs in the host namespace,
    so a loopback resolver works too)."""
    with contextlib.suppress(OSError):
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                return parts[1], 53
    return "127.0.0.1", 53


class Responder(asyncio.DatagramProtocol):
    def __init__(self, view: PolicyView) -> None:
        self._view = view
        self._transport: asyncio.DatagramTransport | None = None
        self._relays: set[asyncio.Task[None]] = set()
        #: Names refused since the last take_refused() (the newest few), for error hints.
        self._refused: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        question = parse_question(data)
        if question is None or self._transport is None:
            return
        policy, pinned = self._view()
        name = question[0]
        if policy.mode is Mode.OFF:
            if name not in self._refused:
                self._refused = [*self._refused, name][-5:]
            return
        if policy.mode is Mode.EGRESS:
            task = asyncio.create_task(self._relay(data, addr))
            self._relays.add(task)
            task.add_done_callback(self._relays.discard)
            return
        if policy.mode is Mode.ALLOW and name in pinned:
            self._transport.sendto(answer(data, pinned[name]), addr)
            return
        self._transport.sendto(answer(data, [], RCODE_REFUSED), addr)
        if name not in self._refused:
            self._refused = [*self._refused, name][-5:]

    def take_refused(self) -> list[str]:
        refused, self._refused = self._refused, []
        return refused

    async def _relay(self, data: bytes, addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        upstream = host_resolver()
        family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, upstream)
                await loop.sock_sendall(sock, data)
                reply = await asyncio.wait_for(loop.sock_recv(sock, 4096), UPSTREAM_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                log.debug("dns relay to %s failed: %s", upstream, exc)
                return
        if self._transport is not None:
            self._transport.sendto(reply, addr)

    def close(self) -> None:
        for task in self._relays:
            task.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None


async def serve(sock: socket.socket, view: PolicyView) -> Responder:
    """Answer on sock (bound inside the sandbox's namespace) until close()."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    _, protocol = await loop.create_datagram_endpoint(lambda: Responder(view), sock=sock)
    return protocol
