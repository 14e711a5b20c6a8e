"""Published ports: a guest TCP port reachable on the host's 127.0.0.1 through slirp.

Rules are added to the running QEMU (``hostfwd_add`` on netdev ``n0`` through the monitor), so
publishing needs no restart; they belong to that QEMU process, which is why a fork child, with
a QEMU of its own, publishes again on ports of its own. Slirp forwards to the guest's
10.0.2.15: a service must listen on that address or on 0.0.0.0, not only on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import asdict, dataclass
from typing import Any

from engine.errors import GroveError
from engine.vmm.qmp import Qmp

HOST = "127.0.0.1"
NETDEV = "n0"


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

    @property
    def rule(self) -> str:
        return f"tcp:{self.host}:{self.host_port}-:{self.guest_port}"


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


async def _monitor(qmp: Qmp, command: str) -> str:
    arguments: dict[str, Any] = {"command-line": command}
    out = await qmp.execute("human-monitor-command", **arguments)
    return str(out or "").strip()


async def publish(qmp: Qmp, guest_port: int, host_port: int = 0) -> PublishedPort:
    """Forward 127.0.0.1:host_port (a free one when 0) to the guest's guest_port."""
    if host_port and not port_is_free(host_port):
        raise GroveError(
            "port_in_use",
            f"host port {host_port} is already in use on {HOST}",
            f"pick another one, or omit it: --publish {guest_port}",
        )
    for _ in range(5):
        port = PublishedPort(HOST, host_port or free_port(), guest_port)
        # Errors come back as monitor text, not as a QMP error.
        out = await _monitor(qmp, f"hostfwd_add {NETDEV} {port.rule}")
        if not out:
            return port
        if host_port:
            break  # the caller's own choice: do not silently use another
    raise GroveError(
        "publish_failed",
        f"cannot publish guest port {guest_port}: {out.splitlines()[0] if out else 'refused'}",
        "pick another host port, or check the sandbox has networking",
    )


async def unpublish(qmp: Qmp, port: PublishedPort) -> None:
    with contextlib.suppress(GroveError):
        await _monitor(qmp, f"hostfwd_remove {NETDEV} tcp:{port.host}:{port.host_port}")
