"""Network slots: each namespace's names and host-side addresses, allocated through SQLite.

Slot N of an engine home names namespace ``grove-<home>-N`` and host link ``gv<home>-N``, and
owns the /30 at offset N of the engine's range (default 10.199.0.0/16): .1 on the host side of
the veth, .2 on the namespace side. The slot row is written before any of that exists, so
after a crash the next engine knows what to remove; the allocator also skips any /30 an
address of the host already uses (another engine, or the operator's own).
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from engine.config import Paths
from engine.errors import GroveError

DEFAULT_RANGE = "10.199.0.0/16"
#: Serialises claims of every engine on this host (their ranges may overlap).
HOST_LOCK = Path("/run/grove-net.lock")


def home_tag(paths: Paths) -> str:
    return hashlib.sha256(str(paths.home).encode()).hexdigest()[:6]


def net_range() -> ipaddress.IPv4Network:
    text = os.environ.get("GROVE_NET_RANGE", DEFAULT_RANGE)
    try:
        network = ipaddress.IPv4Network(text)
    except ValueError as exc:
        raise GroveError(
            "invalid_config", f"GROVE_NET_RANGE={text} is not an IPv4 network: {exc}",
            "set it to a CIDR such as 10.199.0.0/16",
        ) from exc  # fmt: skip
    if network.prefixlen > 28:
        raise GroveError(
            "invalid_config", f"GROVE_NET_RANGE={text} is too small",
            "give at least a /28 (four sandboxes)",
        )  # fmt: skip
    return network


@dataclass(frozen=True)
class Slot:
    number: int
    tag: str
    range: ipaddress.IPv4Network

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        base = int(self.range.network_address) + 4 * self.number
        return ipaddress.IPv4Network((base, 30))

    @property
    def host_ip(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def ns_ip(self) -> str:
        return str(self.subnet.network_address + 2)

    @property
    def namespace(self) -> str:
        return f"grove-{self.tag}-{self.number}"

    @property
    def host_device(self) -> str:
        return f"gv{self.tag}-{self.number}"

    #: Inside the namespace, the veth's peer has the same name everywhere.
    ns_device = "uplink0"


def capacity(network: ipaddress.IPv4Network) -> int:
    return network.num_addresses // 4


def taken_slots(network: ipaddress.IPv4Network, host_addresses: set[str]) -> set[int]:
    taken = set()
    for text in host_addresses:
        address = ipaddress.IPv4Address(text)
        if address in network:
            taken.add((int(address) - int(network.network_address)) // 4)
    return taken


@contextmanager
def host_lock() -> Iterator[None]:
    with open(HOST_LOCK, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
