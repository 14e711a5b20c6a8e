"""A published port: a guest TCP port reachable on the host's 127.0.0.1."""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass
from typing import Any

from engine.errors import GroveError

HOST = "127.0.0.1"


@dataclass(frozen=True)
class PublishedPort:
    host: str
    host_port: int
    guest_port: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PublishedPort:
        return cls(str(data.get("host", HOST)), int(data["host_port"]), int(data["guest_port"]))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def port_in_use(port: int, guest_port: int) -> GroveError:
    return GroveError(
        "port_in_use",
        f"host port {port} is already in use on {HOST}",
        f"pick another one, or omit it: --publish {guest_port}",
    )


def closed_to_ingress(policy: str, guest_port: int) -> GroveError:
    return GroveError(
        "network_off",
        f"cannot publish guest port {guest_port}: the sandbox's network is {policy}",
        "open it with 'grove sandbox network ID --policy published' (or egress)",
    )
