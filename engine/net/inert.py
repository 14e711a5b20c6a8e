"""No network at all: the NIC sits on a QEMU hub with nothing else on it.

For VMs whose guest never talks to a network (an environment's first boot, fork loaders,
disk inspection). A hub keeps no migration state, unlike user-mode networking (whose
``slirp`` section a TAP-backed restore cannot load), so a template captured this way
restores under either backend.
"""

from __future__ import annotations

from engine.errors import GroveError
from engine.net.policy import OFF, NetworkPolicy
from engine.net.ports import PublishedPort


class InertNet:
    backend = "none"

    def __init__(self) -> None:
        self.policy: NetworkPolicy = OFF

    @property
    def host_device(self) -> str:
        return ""

    @property
    def namespace(self) -> str:
        return ""

    @property
    def host_address(self) -> str:
        return ""

    @property
    def published(self) -> list[PublishedPort]:
        return []

    @property
    def pinned(self) -> dict[str, list[str]]:
        return {}

    def netdev(self) -> tuple[str, tuple[int, ...]]:
        return "hubport,id=n0,hubid=0", ()

    def spawned(self) -> None:
        pass

    def bind(self, qmp: object) -> None:
        pass

    def counters(self) -> tuple[int, int] | None:
        return None  # no device of the engine's to count on (slirp keeps none either)

    async def apply(self, policy: NetworkPolicy, pinned: dict[str, list[str]]) -> None:
        raise GroveError("network_failed", "this VM has no network", "it is not a sandbox")

    async def publish(self, guest_port: int, host_port: int = 0) -> PublishedPort:
        raise GroveError("network_failed", "this VM has no network", "it is not a sandbox")

    async def unpublish(self, port: PublishedPort) -> None:
        pass

    def rename(self, owner: str) -> None:
        pass

    async def close(self) -> None:
        pass
