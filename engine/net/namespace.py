"""A sandbox's network when the engine is root: its own namespace, owned by one object.

Inside the namespace: ``tap0`` (the VM's backend, handed to QEMU as a file descriptor) with
the addresses user-mode networking would give (gateway 10.0.2.2 with slirp's MAC, resolver
10.0.2.3), so a guest restored from any template needs no reconfiguration; ``uplink0``, the
namespace end of a veth pair, with the slot's address; forwarding on, and NAT out of it.
On the host: the veth's other end with the slot's host address, and the sandbox's chain in
the engine's nftables table. The engine's resolver and published-port proxies for it run in
the engine, with sockets made inside the namespace.

``close()`` removes all of it; the slot row (engine.net.slots) names it for the next engine
if this one dies first.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import time
from dataclasses import dataclass

from pyroute2 import IPRoute

from engine.errors import GroveError
from engine.metering.net import traffic
from engine.net import dns, netns, nft
from engine.net.policy import NetworkPolicy
from engine.net.ports import HOST, PublishedPort, closed_to_ingress, port_in_use, port_is_free
from engine.net.proxy import PortProxy
from engine.net.slots import Slot
from engine.store.db import Store

log = logging.getLogger(__name__)

GATEWAY_MAC = "52:55:0a:00:02:02"  # slirp's: the guest's neighbour cache stays right


@dataclass(frozen=True)
class HostSide:
    """What every namespace of one engine shares: its store and its host table."""

    store: Store
    table: nft.HostTable


def _build_inside(slot: Slot) -> tuple[int, socket.socket]:
    """In the new namespace (on its thread): the TAP, addresses, routes, the resolver socket."""
    tap_fd = netns.open_tap(nft.TAP)
    try:
        with IPRoute() as ip:
            lo = netns.link_index(ip, "lo")
            tap = netns.link_index(ip, nft.TAP)
            up = netns.link_index(ip, slot.ns_device)
            ip.link("set", index=tap, address=GATEWAY_MAC)
            ip.addr("add", index=tap, address=nft.GATEWAY_IP, prefixlen=24)
            ip.addr("add", index=tap, address=nft.DNS_IP, prefixlen=24)
            ip.addr("add", index=up, address=slot.ns_ip, prefixlen=30)
            for index in (lo, tap, up):
                ip.link("set", index=index, state="up")
            ip.route("add", dst="0.0.0.0/0", gateway=slot.host_ip)
        netns.write_sysctl("net.ipv4.ip_forward", "1")
        netns.write_sysctl("net.ipv6.conf.all.disable_ipv6", "1")
        nft.run_here(nft.namespace_table(slot))
        # Set after the table loaded conntrack here: a segment no connection in this
        # namespace knows is then invalid (and reset), never adopted mid-stream.
        netns.write_sysctl("net.netfilter.nf_conntrack_tcp_loose", "0")
        resolver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        resolver.bind((nft.DNS_IP, 53))
    except BaseException:
        os.close(tap_fd)
        raise
    return tap_fd, resolver


def _reopen_resolver() -> socket.socket:
    resolver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    resolver.bind((nft.DNS_IP, 53))
    return resolver


def _host_side(slot: Slot) -> None:
    with IPRoute() as ip:
        ip.link(
            "add", ifname=slot.host_device, kind="veth",
            peer={"ifname": slot.ns_device, "net_ns_fd": str(netns.path_of(slot.namespace))},
        )  # fmt: skip
        index = netns.link_index(ip, slot.host_device)
        ip.addr("add", index=index, address=slot.host_ip, prefixlen=30)
        ip.link("set", index=index, state="up")
    # Forwarding for what comes in from this sandbox only; the host's own setting is the
    # operator's (see 'grove doctor').
    netns.write_sysctl(f"net.ipv4.conf.{slot.host_device}.forwarding", "1")
    netns.write_sysctl(f"net.ipv6.conf.{slot.host_device}.disable_ipv6", "1")


class NamespaceNet:
    backend = "namespace"

    def __init__(self, host: HostSide, slot: Slot, policy: NetworkPolicy) -> None:
        self._host = host
        self.slot = slot
        self.policy = policy
        self._pinned: dict[str, list[str]] = {}
        self._tap_fd: int | None = None
        self._resolver: dns.Responder | None = None
        self._proxies: dict[PublishedPort, PortProxy] = {}
        self.closed = False
        self._dropped_seen = 0

    # what the VM and the metering see

    @property
    def host_device(self) -> str:
        return self.slot.host_device

    @property
    def namespace(self) -> str:
        return self.slot.namespace

    @property
    def host_address(self) -> str:
        return self.slot.ns_ip

    @property
    def published(self) -> list[PublishedPort]:
        return list(self._proxies)

    @property
    def pinned(self) -> dict[str, list[str]]:
        return dict(self._pinned)

    def netdev(self) -> tuple[str, tuple[int, ...]]:
        assert self._tap_fd is not None, "netdev() of an adopted or closed network"
        # vhost=off: vhost-net would bypass nothing we need, but TCG hosts lack it anyway.
        return f"tap,id=n0,fd={self._tap_fd},vhost=off", (self._tap_fd,)

    def spawned(self) -> None:
        """QEMU holds the TAP now; the engine's copy goes (the TAP dies with QEMU)."""
        if self._tap_fd is not None:
            os.close(self._tap_fd)
            self._tap_fd = None

    def bind(self, qmp: object) -> None:
        """Nothing to drive through the monitor: the namespace is the backend."""

    def counters(self) -> tuple[int, int] | None:
        """(received, sent) bytes of the sandbox, from the host end's counters."""
        received, sent = traffic(self.slot.host_device)
        return None if received is None or sent is None else (received, sent)

    # making, adopting, changing, removing

    async def build(self, pinned: dict[str, list[str]]) -> None:
        """Everything, from an empty slot (its row written by the caller)."""
        self._pinned = pinned
        await asyncio.to_thread(netns.create, self.slot.namespace)
        await asyncio.to_thread(_host_side, self.slot)
        self._tap_fd, resolver = await asyncio.to_thread(
            netns.run_in, self.slot.namespace, lambda: _build_inside(self.slot)
        )
        await nft.apply(
            self._host.table.attach(self.slot, self.policy, _rules(self.policy, pinned))
        )
        self._resolver = await dns.serve(resolver, self._view)

    async def adopt(self, pinned: dict[str, list[str]]) -> None:
        """After an engine restart: the namespace and the VM's TAP outlived the engine; its
        resolver and proxies did not, so they start again (on the same host ports)."""
        if not netns.exists(self.slot.namespace):
            raise GroveError(
                "network_failed", f"namespace {self.slot.namespace} is gone",
                "the sandbox cannot reach its network; reset or recreate it",
            )  # fmt: skip
        self._pinned = pinned
        resolver = await asyncio.to_thread(netns.run_in, self.slot.namespace, _reopen_resolver)
        self._resolver = await dns.serve(resolver, self._view)
        for host, host_port, guest_port in self._host.store.net_published(self.slot.number):
            try:
                await self._listen(PublishedPort(str(host), int(host_port), int(guest_port)))
            except OSError as exc:
                log.warning("cannot publish %s again after restart: %s", host_port, exc)
        self._save_published()

    def _view(self) -> tuple[NetworkPolicy, dict[str, list[str]]]:
        return self.policy, self._pinned

    async def apply(self, policy: NetworkPolicy, pinned: dict[str, list[str]]) -> None:
        """The new policy in one nftables transaction; open connections it forbids are cut."""
        await nft.apply(self._host.table.change(self.slot, policy, _rules(policy, pinned)))
        self.policy, self._pinned = policy, pinned
        self._dropped_seen = 0  # the chain's counters start again
        if not policy.ingress:
            for proxy in self._proxies.values():
                proxy.cut()

    async def blocked(self) -> tuple[int, list[str]]:
        """Packets the policy dropped and names the resolver refused since the last call
        (what a failed command may have needed)."""
        text = await nft.apply(f"list chain inet {self._host.table.name} "
                               f"{self._host.table.chain(self.slot)}\n")  # fmt: skip
        dropped = 0
        for line in text.splitlines():
            words = line.split()
            if words[:2] == ["counter", "packets"] and words[-1] == "drop":
                dropped = int(words[2])
        new, self._dropped_seen = max(0, dropped - self._dropped_seen), dropped
        names = self._resolver.take_refused() if self._resolver is not None else []
        return new, names

    def chain_rules(self) -> tuple[NetworkPolicy, nft.Pinned]:
        """What this sandbox's chain holds (for a rebuild of the whole host table)."""
        return self.policy, _rules(self.policy, self._pinned)

    async def publish(self, guest_port: int, host_port: int = 0) -> PublishedPort:
        if not self.policy.ingress:
            raise closed_to_ingress(str(self.policy), guest_port)
        if host_port and not port_is_free(host_port):
            raise port_in_use(host_port, guest_port)
        port = await self._listen(PublishedPort(HOST, host_port, guest_port))
        self._save_published()
        return port

    async def _listen(self, wanted: PublishedPort) -> PublishedPort:
        proxy = PortProxy(
            self.slot.namespace, (nft.GUEST_IP, wanted.guest_port), lambda: self.policy.ingress
        )
        await proxy.listen(wanted.host, wanted.host_port)
        port = PublishedPort(proxy.host, proxy.host_port, wanted.guest_port)
        self._proxies[port] = proxy
        return port

    async def unpublish(self, port: PublishedPort) -> None:
        proxy = self._proxies.pop(port, None)
        if proxy is not None:
            await proxy.close()
            self._save_published()

    def _save_published(self) -> None:
        rows: list[list[object]] = [[p.host, p.host_port, p.guest_port] for p in self._proxies]
        with contextlib.suppress(Exception):
            self._host.store.set_net_published(self.slot.number, rows)

    def rename(self, owner: str) -> None:
        """A warm VM handed to a sandbox: its slot now belongs to that sandbox."""
        slots = self._host.store.net_slots()
        for old, number in slots.items():
            if number == self.slot.number and old != owner:
                self._host.store.move_net_slot(old, owner)

    async def close(self) -> None:
        """Remove everything this sandbox had on the network; safe to call twice."""
        if self.closed:
            return
        self.closed = True
        started = time.monotonic()
        for proxy in list(self._proxies.values()):
            await proxy.close()
        self._proxies.clear()
        if self._resolver is not None:
            self._resolver.close()
            self._resolver = None
        self.spawned()  # a TAP never handed to QEMU goes now
        await teardown(self._host, self.slot)
        log.debug("network of slot %s removed in %.1f ms", self.slot.number,
                  (time.monotonic() - started) * 1000)  # fmt: skip


async def teardown(host: HostSide, slot: Slot) -> None:
    """Remove a slot's chain, veth, namespace and row, whatever of them exists."""
    with contextlib.suppress(GroveError):
        await nft.apply(host.table.detach(slot))
    await asyncio.to_thread(_remove_links, slot)
    host.store.free_net_slot(slot.number)


def _remove_links(slot: Slot) -> None:
    with contextlib.suppress(Exception):
        netns.delete_link(slot.host_device)
    netns.remove(slot.namespace)


def _rules(policy: NetworkPolicy, pinned: dict[str, list[str]]) -> nft.Pinned:
    """allow= entries as networks: names replaced by the addresses pinned for them."""
    rules: nft.Pinned = []
    for rule in policy.allow:
        network = rule.network
        if network is not None:
            rules.append((network, rule.port))
            continue
        for address in pinned.get(rule.host, []):
            rules.append((ipaddress.ip_network(address), rule.port))
    return rules
