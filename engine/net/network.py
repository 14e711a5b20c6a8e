"""What a VM's network is to the rest of the engine, whichever backend it has."""

from __future__ import annotations

from typing import Protocol

from engine.net.policy import NetworkPolicy
from engine.net.ports import PublishedPort


class Network(Protocol):
    backend: str
    policy: NetworkPolicy

    @property
    def host_device(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def host_address(self) -> str: ...

    @property
    def published(self) -> list[PublishedPort]: ...

    @property
    def pinned(self) -> dict[str, list[str]]: ...

    def netdev(self) -> tuple[str, tuple[int, ...]]:
        """QEMU's -netdev value, and the file descriptors QEMU must inherit for it."""
        ...

    def spawned(self) -> None:
        """QEMU started with netdev(): let go of what it inherited."""
        ...

    def bind(self, qmp: object) -> None: ...

    def counters(self) -> tuple[int, int] | None:
        """(received, sent) bytes, or None: no datum."""
        ...

    async def apply(self, policy: NetworkPolicy, pinned: dict[str, list[str]]) -> None: ...

    async def publish(self, guest_port: int, host_port: int = 0) -> PublishedPort: ...

    async def unpublish(self, port: PublishedPort) -> None: ...

    def rename(self, owner: str) -> None: ...

    async def close(self) -> None: ...
