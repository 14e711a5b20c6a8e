"""What the engine reports about a sandbox's network."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NetworkInfo:
    sandbox_id: str
    #: The policy text (engine.net.policy): off | published | egress | allow=...
    policy: str
    #: "namespace" (its own network namespace, TAP and nftables chain) or "user" (QEMU
    #: user-mode networking, when the engine is not root).
    backend: str
    #: The guest's own address; the same in every sandbox (templates carry no identity).
    guest_address: str
    #: Its network namespace, and the address the host sees its traffic come from ("" in
    #: user mode).
    namespace: str = ""
    host_address: str = ""
    #: allow= names as the engine pinned them, "name=address" each.
    pinned: tuple[str, ...] = ()
    #: Bytes the sandbox received and sent; None: no datum (user mode, or not running).
    rx_bytes: int | None = None
    tx_bytes: int | None = None
    #: How long the last policy change took to apply, engine side.
    applied_ms: float | None = None
