"""A sandbox's network policy as the API sees it: shown, and changed live."""

from __future__ import annotations

import time

from engine.errors import GroveError
from engine.net.namespace import NamespaceNet
from engine.net.networks import Networks
from engine.net.nft import GUEST_IP
from engine.net.policy import Mode
from engine.net.status import NetworkInfo
from engine.sandbox.events import EventLog
from engine.sandbox.phase import Phase
from engine.sandbox.vms import SandboxVms
from engine.store.db import Store
from engine.store.records import SandboxRecord


class SandboxNetworks:
    def __init__(self, store: Store, vms: SandboxVms, networks: Networks, events: EventLog):
        self._store = store
        self._vms = vms
        self._networks = networks
        self._events = events
        self._applied_ms: dict[str, float] = {}

    def info(self, record: SandboxRecord) -> NetworkInfo:
        vm = self._vms.vm(record.id)
        live = vm is not None and record.phase in (Phase.RUNNING, Phase.PAUSED)
        net = vm.net if live and vm is not None else None
        counters = net.counters() if net is not None else None
        pinned = net.pinned if net is not None else {}
        return NetworkInfo(
            sandbox_id=record.id,
            policy=record.network,
            backend=net.backend if net is not None else self._networks.backend,
            guest_address=GUEST_IP,
            namespace=net.namespace if net is not None else "",
            host_address=net.host_address if net is not None else "",
            pinned=tuple(f"{name}={a}" for name, addrs in sorted(pinned.items()) for a in addrs),
            rx_bytes=counters[0] if counters else None,
            tx_bytes=counters[1] if counters else None,
            applied_ms=self._applied_ms.get(record.id),
        )

    async def blocked_hint(self, sandbox_id: str) -> str:
        """After a command failed: what its sandbox's policy blocked since the last check, as
        a cause and a remedy ('' when nothing was, or the backend cannot tell)."""
        vm = self._vms.vm(sandbox_id)
        if not isinstance(getattr(vm, "net", None), NamespaceNet):
            return ""
        assert vm is not None and isinstance(vm.net, NamespaceNet)
        try:
            dropped, names = await vm.net.blocked()
        except GroveError:
            return ""
        if not dropped and not names:
            return ""
        what = []
        if dropped:
            what.append(f"{dropped} outgoing packet{'s' if dropped != 1 else ''}")
        if names:
            what.append("the lookup of " + ", ".join(names))
        policy = vm.net.policy
        remedy = "--policy egress" if policy.mode is not Mode.ALLOW else "--policy allow=...,HOST"
        return (
            f"network policy '{policy}' blocked {' and '.join(what)}; to open it: "
            f"grove sandbox network {sandbox_id} {remedy}"
        )

    async def change(self, ref: str, text: str) -> NetworkInfo:
        policy = self._networks.policy_of(text)
        record = self._vms.get(ref)
        async with self._vms.lock(record.id):
            record = self._vms.get(record.id)
            if record.phase is Phase.TERMINATED:
                raise GroveError(
                    "invalid_phase", f"sandbox {record.id} is terminated",
                    "create a new one with --network",
                )  # fmt: skip
            vm = self._vms.vm(record.id)
            if vm is not None and record.phase in (Phase.RUNNING, Phase.PAUSED):
                pinned = await self._networks.pin(policy)
                started = time.monotonic()
                await vm.net.apply(policy, pinned)
                self._applied_ms[record.id] = round((time.monotonic() - started) * 1000, 2)
            # A stopped sandbox gets it when it starts again.
            record.network = str(policy)
            self._store.update_sandbox(record.id, network=record.network)
        await self._events.emit(record.id, "network_changed", policy=record.network)
        return self.info(record)
