"""The engine's networks: which backend it uses, and every sandbox network it makes.

- ``namespace`` (engine runs as root, with netns, TUN and nftables): one namespace per VM
  (engine.net.namespace), its slot allocated in SQLite.
- ``user`` (not root, or GROVE_NETWORK_BACKEND=user): QEMU user-mode networking
  (engine.net.user).

GROVE_NETWORK_DEFAULT sets the policy of a sandbox created without one (``published``).
Names in allow= are resolved here, once, and pinned: first from ``$GROVE_HOME/network-hosts``
(``ADDRESS NAME...`` lines, for names the operator pins), then by the host's resolver.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
from pathlib import Path

from engine.config import Paths
from engine.errors import GroveError
from engine.net import netns, nft, slots
from engine.net.inert import InertNet
from engine.net.namespace import HostSide, NamespaceNet, teardown
from engine.net.network import Network
from engine.net.policy import OFF, NetworkPolicy, parse
from engine.net.user import UserNet, refuse_allow, restricted
from engine.store.db import Store

log = logging.getLogger(__name__)

NAMESPACE = "namespace"
USER = "user"


def detect() -> tuple[str, str]:
    """(backend, why) for this engine."""
    wanted = os.environ.get("GROVE_NETWORK_BACKEND", "auto")
    if wanted not in ("auto", NAMESPACE, USER):
        raise GroveError(
            "invalid_config", f"GROVE_NETWORK_BACKEND={wanted} is not auto, namespace or user",
            "unset it, or set it to one of those",
        )  # fmt: skip
    if wanted == USER:
        return USER, "GROVE_NETWORK_BACKEND=user"
    missing = missing_for_namespaces()
    if not missing:
        return NAMESPACE, "root, with netns, tun and nftables"
    if wanted == NAMESPACE:
        raise GroveError(
            "network_unavailable", f"namespace networking needs {missing[0]}",
            "see 'grove doctor', or unset GROVE_NETWORK_BACKEND",
        )  # fmt: skip
    return USER, f"no namespace networking: {missing[0]}"


def missing_for_namespaces() -> list[str]:
    """What the namespace backend needs and this host lacks (empty: it can be used)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    if not os.path.exists("/dev/net/tun"):
        missing.append("/dev/net/tun")
    if not os.path.exists("/proc/self/ns/net"):
        missing.append("network namespaces")
    try:
        nft._Lib.get()
    except GroveError:
        missing.append("nftables (libnftables)")
    return missing


def default_policy() -> NetworkPolicy:
    text = os.environ.get("GROVE_NETWORK_DEFAULT", "published")
    try:
        return parse(text)
    except GroveError as exc:
        raise GroveError(
            "invalid_config", f"GROVE_NETWORK_DEFAULT: {exc.message}", exc.remedy
        ) from exc


class Networks:
    def __init__(self, paths: Paths, store: Store) -> None:
        self._paths = paths
        self._store = store
        self.backend, self.reason = detect()
        self.default_policy = default_policy()
        if self.backend == USER:
            refuse_allow(self.default_policy)
        self._tag = slots.home_tag(paths)
        self._range = slots.net_range()
        self._host = HostSide(store, nft.HostTable(self._tag, self._range))
        self._live: dict[int, NamespaceNet] = {}
        self._table_ready = False

    @property
    def namespaced(self) -> bool:
        return self.backend == NAMESPACE

    def policy_of(self, text: str) -> NetworkPolicy:
        policy = parse(text) if text else self.default_policy
        if not self.namespaced:
            refuse_allow(policy)
        return policy

    def pool_fits(self, policy: NetworkPolicy) -> bool:
        """Whether a warm VM (started with the default policy) can take this policy."""
        return self.namespaced or restricted(policy) == restricted(self.default_policy)

    # pinning

    async def pin(self, policy: NetworkPolicy) -> dict[str, list[str]]:
        """Each allow= name resolved now, once; the addresses it gets are what is allowed."""
        names = policy.names
        if not names:
            return {}
        local = self._hosts_file()
        loop = asyncio.get_running_loop()
        pinned: dict[str, list[str]] = {}
        for name in names:
            if name.lower() in local:
                pinned[name] = local[name.lower()]
                continue
            try:
                infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise GroveError(
                    "name_unresolved", f"allow= name '{name}' does not resolve: {exc.strerror}",
                    "check the name, or allow its address instead",
                ) from exc  # fmt: skip
            pinned[name] = sorted({str(info[4][0]) for info in infos})
        return pinned

    def _hosts_file(self) -> dict[str, list[str]]:
        entries: dict[str, list[str]] = {}
        with contextlib.suppress(OSError):
            for line in Path(self._paths.home / "network-hosts").read_text().splitlines():
                fields = line.split("#", 1)[0].split()
                if len(fields) < 2:
                    continue
                with contextlib.suppress(ValueError):
                    address = str(ipaddress.ip_address(fields[0]))
                    for name in fields[1:]:
                        entries.setdefault(name.lower(), []).append(address)
        return entries

    # making networks

    async def attach(self, owner: str, policy: NetworkPolicy) -> Network:
        """A new network for a VM about to start (owner: the sandbox or warm VM it is for)."""
        if not self.namespaced:
            return UserNet(policy)
        pinned = await self.pin(policy)
        await self._ensure_table()
        slot = await asyncio.to_thread(self._claim, owner)
        net = NamespaceNet(self._host, slot, policy)
        try:
            await net.build(pinned)
        except BaseException:
            await teardown(self._host, slot)
            raise
        self._live[slot.number] = net
        return net

    def _claim(self, owner: str) -> slots.Slot:
        with slots.host_lock():
            taken = slots.taken_slots(self._range, netns.host_ipv4_addresses())
            try:
                number = self._store.claim_net_slot(owner, taken, slots.capacity(self._range))
            except LookupError as exc:
                raise GroveError(
                    "network_exhausted", str(exc),
                    "terminate sandboxes, or give the engine a larger GROVE_NET_RANGE",
                ) from exc  # fmt: skip
        return slots.Slot(number, self._tag, self._range)

    async def adopt(self, owner: str, policy: NetworkPolicy) -> Network:
        """The network of a VM an earlier engine started (its QEMU holds the TAP)."""
        if not self.namespaced:
            return UserNet(policy)
        number = self._store.net_slots().get(owner)
        if number is None:
            raise GroveError(
                "network_failed", f"no network slot is recorded for {owner}",
                "reset or recreate the sandbox",
            )  # fmt: skip
        net = NamespaceNet(self._host, slots.Slot(number, self._tag, self._range), policy)
        await self._ensure_table()
        await net.adopt(await self.pin(policy))
        self._live[number] = net
        return net

    def for_loader(self) -> Network:
        """A fork loader's: it only receives a source's state, so its backend must load
        whatever backend state the source's stream holds (slirp's, in user mode)."""
        return InertNet() if self.namespaced else UserNet(OFF)

    def forget(self, net: Network) -> None:
        if isinstance(net, NamespaceNet):
            self._live.pop(net.slot.number, None)

    # engine start and stop

    async def reconcile(self) -> list[str]:
        """After recovery: the host table holds exactly the live networks' chains, and every
        slot, namespace and veth of this home that no live network owns is removed."""
        if not self.namespaced:
            return []
        live = {n: net for n, net in self._live.items() if not net.closed}
        self._live = live
        await self._rebuild_table()
        removed = []
        for owner, number in self._store.net_slots().items():
            if number not in live:
                await teardown(self._host, slots.Slot(number, self._tag, self._range))
                removed.append(owner)
        prefix = f"grove-{self._tag}-"
        for name in netns.listed(prefix):
            number = int(name.removeprefix(prefix)) if name.removeprefix(prefix).isdigit() else -1
            if number not in live and await asyncio.to_thread(_remove_quietly, name):
                removed.append(name)
        # pyroute2's sync API runs its own event loop: never on the engine's thread.
        links = await asyncio.to_thread(netns.host_links, f"gv{self._tag}-")
        for link in links:
            number_text = link.removeprefix(f"gv{self._tag}-")
            if not number_text.isdigit() or int(number_text) not in live:
                await asyncio.to_thread(netns.delete_link, link)
                removed.append(link)
        if removed:
            log.info("removed network leftovers: %s", ", ".join(removed))
        return removed

    async def _ensure_table(self) -> None:
        if not self._table_ready:
            await self._rebuild_table()

    async def _rebuild_table(self) -> None:
        """The host table as exactly the live networks need it, in one transaction."""
        live = [net for net in self._live.values() if not net.closed]
        await nft.apply(self._host.table.rebuild({net.slot: net.chain_rules() for net in live}))
        self._table_ready = True

    async def close(self) -> None:
        """Engine stop, after every VM ended: nothing of the table stays behind."""
        if not self.namespaced:
            return
        await self.reconcile()
        if not self._live:
            with contextlib.suppress(GroveError):
                await nft.apply(self._host.table.drop_table())
            self._table_ready = False


def closed() -> Network:
    """A network for a VM whose own could not be found again (it has none)."""
    return InertNet()


def _remove_quietly(name: str) -> bool:
    """A leftover that cannot go now is logged and tried again by the next sweep: it must
    not keep an engine from starting."""
    try:
        return netns.remove(name)
    except OSError as exc:
        log.warning("cannot remove network namespace %s: %s", name, exc)
        return False
