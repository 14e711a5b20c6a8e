"""User-mode networking (QEMU's slirp), for an engine that is not root.

``restrict=on`` (for ``off`` and ``published``) keeps the guest from reaching the host or
anything beyond it, while host forwards (published ports) still work; ``egress`` runs without
it. The flag is fixed for the life of the QEMU process, so a live change across it is
refused with a remedy; ``allow=`` needs nftables and so root.
"""

from __future__ import annotations

import contextlib
from typing import Any

from engine.errors import GroveError
from engine.net.inert import InertNet
from engine.net.policy import Mode, NetworkPolicy
from engine.net.ports import (
    HOST,
    PublishedPort,
    closed_to_ingress,
    free_port,
    port_in_use,
    port_is_free,
)
from engine.vmm.qmp import Qmp

NETDEV = "n0"


def restricted(policy: NetworkPolicy) -> bool:
    return not policy.egress


def refuse_allow(policy: NetworkPolicy) -> None:
    if policy.mode is Mode.ALLOW:
        raise GroveError(
            "network_needs_root",
            "allow= needs a network namespace per sandbox, which only a root engine makes",
            "run the engine as root, or use --network egress or published",
        )


class UserNet(InertNet):
    """A VM's slirp backend and the host forwards on it (no namespace, device or address of
    its own: those stay InertNet's empty ones)."""

    backend = "user"

    def __init__(self, policy: NetworkPolicy) -> None:
        refuse_allow(policy)
        super().__init__()
        self.policy = policy
        self.restricted = restricted(policy)
        self._published: list[PublishedPort] = []
        self._qmp: Qmp | None = None

    @property
    def published(self) -> list[PublishedPort]:
        return list(self._published)

    def netdev(self) -> tuple[str, tuple[int, ...]]:
        return f"user,id={NETDEV}" + (",restrict=on" if self.restricted else ""), ()

    def bind(self, qmp: object) -> None:
        assert isinstance(qmp, Qmp)
        self._qmp = qmp

    async def apply(self, policy: NetworkPolicy, pinned: dict[str, list[str]]) -> None:
        refuse_allow(policy)
        if restricted(policy) != self.restricted:
            raise GroveError(
                "network_needs_restart",
                f"user-mode networking cannot change from {self.policy} to {policy} live",
                "create the sandbox again with --network "
                f"{policy}, or run the engine as root (namespaces change live)",
            )
        if policy.mode is Mode.OFF and self._published:
            raise GroveError(
                "network_ports_published",
                f"the sandbox still publishes {len(self._published)} port(s)",
                "stop the services that publish them first",
            )
        self.policy = policy

    async def publish(self, guest_port: int, host_port: int = 0) -> PublishedPort:
        if not self.policy.ingress:
            raise closed_to_ingress(str(self.policy), guest_port)
        if host_port and not port_is_free(host_port):
            raise port_in_use(host_port, guest_port)
        out = ""
        for _ in range(5):
            port = PublishedPort(HOST, host_port or free_port(), guest_port)
            # Errors come back as monitor text, not as a QMP error.
            out = await self._monitor(f"hostfwd_add {NETDEV} {_rule(port)}")
            if not out:
                self._published.append(port)
                return port
            if host_port:
                break  # the caller's own choice: do not silently use another
        raise GroveError(
            "publish_failed",
            f"cannot publish guest port {guest_port}: {out.splitlines()[0] if out else 'refused'}",
            "pick another host port, or check the sandbox has networking",
        )

    async def unpublish(self, port: PublishedPort) -> None:
        with contextlib.suppress(GroveError):
            await self._monitor(f"hostfwd_remove {NETDEV} tcp:{port.host}:{port.host_port}")
        with contextlib.suppress(ValueError):
            self._published.remove(port)

    async def _monitor(self, command: str) -> str:
        if self._qmp is None:
            raise GroveError("sandbox_not_running", "the VM has no monitor", "start it again")
        arguments: dict[str, Any] = {"command-line": command}
        out = await self._qmp.execute("human-monitor-command", **arguments)
        return str(out or "").strip()

    async def close(self) -> None:
        self._published.clear()  # the forwards go with the QEMU process


def _rule(port: PublishedPort) -> str:
    return f"tcp:{port.host}:{port.host_port}-:{port.guest_port}"
