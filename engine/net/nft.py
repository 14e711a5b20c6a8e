"""nftables rulesets: rendered here, applied with one ``nft -f -`` each (one transaction, so a
change is all-or-nothing and never leaves a half-open policy).

The host has one table per engine home, ``inet grove_<home>``: a verdict map sends every packet
a sandbox's veth brings in to that sandbox's chain (counter, what its policy accepts, then
drop); a packet from a veth with no chain is dropped; traffic towards sandboxes is only the
replies of what their chains let out; and what leaves the host from the sandboxes' range is
masqueraded. Each namespace has a fixed table of its own: guest address anti-spoofing, NAT to
the namespace's address, and a TCP reset for a segment no connection there knows (a fork
child's copy of its parent's connections).

Every name and address here is the engine's own or was validated by engine.net.policy, so the
text format needs no quoting.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import ipaddress
import shutil
import threading

from engine.errors import GroveError
from engine.net.policy import Mode, NetworkPolicy
from engine.net.slots import Slot

GUEST_IP = "10.0.2.15"
GATEWAY_IP = "10.0.2.2"
DNS_IP = "10.0.2.3"
TAP = "tap0"

#: Resolved allow= entries: (network, port or None).
Pinned = list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int | None]]


def nft_binary() -> str:
    path = shutil.which("nft")
    if path is None:
        raise GroveError(
            "nftables_missing", "nft (nftables) is not installed",
            "apt-get install nftables, or run the engine as a non-root user (user-mode network)",
        )  # fmt: skip
    return path


class _Lib:
    """libnftables (what `nft` itself is built on), called in-process: a ruleset then costs
    about a millisecond instead of a process start, and it acts in the namespace of the thread
    that calls it."""

    _lock = threading.Lock()
    _lib: ctypes.CDLL | None = None

    @classmethod
    def get(cls) -> ctypes.CDLL:
        with cls._lock:
            if cls._lib is None:
                name = ctypes.util.find_library("nftables")
                if name is None:
                    nft_binary()  # the install hint when nftables is missing altogether
                    raise GroveError(
                        "nftables_missing", "libnftables is not installed",
                        "apt-get install libnftables1",
                    )  # fmt: skip
                lib = ctypes.CDLL(name)
                lib.nft_ctx_new.restype = ctypes.c_void_p
                lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
                lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
                lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
                lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
                lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
                lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
                lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
                lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
                lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
                cls._lib = lib
            return cls._lib


def run_here(ruleset: str) -> str:
    """Apply ruleset (one transaction) in the calling thread's namespace; its output."""
    lib = _Lib.get()
    ctx = lib.nft_ctx_new(0)
    try:
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        rc = lib.nft_run_cmd_from_buffer(ctx, ruleset.encode())
        if rc != 0:
            err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
            first = [line for line in err.strip().splitlines() if line.strip()]
            raise GroveError(
                "network_failed",
                f"nftables refused a ruleset: {first[0] if first else rc}",
                "see 'grove doctor' (nftables)",
            )
        return (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
    finally:
        lib.nft_ctx_free(ctx)


async def apply(ruleset: str) -> str:
    """Apply ruleset in the host namespace (the engine's threads all live there)."""
    return await asyncio.to_thread(run_here, ruleset)


class HostTable:
    """The engine's table in the host namespace."""

    def __init__(self, tag: str, net_range: ipaddress.IPv4Network) -> None:
        self.name = f"grove_{tag}"
        self.devices = f"gv{tag}-*"
        self.range = net_range

    def chain(self, slot: Slot) -> str:
        return f"slot_{slot.number}"

    def rebuild(self, slots: dict[Slot, tuple[NetworkPolicy, Pinned]]) -> str:
        """The whole table as the store says it should be (engine start: one atomic swap)."""
        t = self.name
        lines = [
            f"add table inet {t}",
            f"delete table inet {t}",
            f"table inet {t} {{",
            "  map dev_policy { type ifname : verdict; }",
            "  chain forward {",
            "    type filter hook forward priority filter - 5; policy accept;",
            "    iifname vmap @dev_policy",
            f'    iifname "{self.devices}" drop',
            f'    oifname "{self.devices}" ct state established,related accept',
            f'    oifname "{self.devices}" drop',
            "  }",
            "  chain input {",
            "    type filter hook input priority filter - 5; policy accept;",
            f'    iifname "{self.devices}" ct state established,related accept',
            f'    iifname "{self.devices}" drop',
            "  }",
            "  chain postrouting {",
            "    type nat hook postrouting priority srcnat; policy accept;",
            f'    ip saddr {self.range} oifname != "{self.devices}" masquerade',
            "  }",
            "}",
        ]
        for slot, (policy, pinned) in sorted(slots.items(), key=lambda item: item[0].number):
            lines += self._attach_lines(slot, policy, pinned)
        return "\n".join(lines) + "\n"

    def attach(self, slot: Slot, policy: NetworkPolicy, pinned: Pinned) -> str:
        return "\n".join(self._attach_lines(slot, policy, pinned)) + "\n"

    def _attach_lines(self, slot: Slot, policy: NetworkPolicy, pinned: Pinned) -> list[str]:
        t, c = self.name, self.chain(slot)
        return [
            f"add chain inet {t} {c}",
            *self._policy_lines(slot, policy, pinned),
            f'add element inet {t} dev_policy {{ "{slot.host_device}" : jump {c} }}',
        ]

    def change(self, slot: Slot, policy: NetworkPolicy, pinned: Pinned) -> str:
        return "\n".join(self._policy_lines(slot, policy, pinned)) + "\n"

    def _policy_lines(self, slot: Slot, policy: NetworkPolicy, pinned: Pinned) -> list[str]:
        t, c = self.name, self.chain(slot)
        head = f"add rule inet {t} {c}"
        lines = [f"flush chain inet {t} {c}", f"{head} counter"]
        if policy.mode is Mode.EGRESS:
            lines.append(f"{head} accept")
        elif policy.mode is Mode.ALLOW:
            for network, port in pinned:
                family = "ip" if network.version == 4 else "ip6"
                match = f"{family} daddr {network}"
                if port is None:
                    lines.append(f"{head} {match} accept")
                else:
                    lines.append(f"{head} {match} tcp dport {port} accept")
                    lines.append(f"{head} {match} udp dport {port} accept")
        # Policy changes cut connections already open too: nothing above looks at ct state.
        lines.append(f"{head} counter drop")
        return lines

    def detach(self, slot: Slot) -> str:
        t, c = self.name, self.chain(slot)
        return (
            f'delete element inet {t} dev_policy {{ "{slot.host_device}" }}\n'
            f"flush chain inet {t} {c}\n"
            f"delete chain inet {t} {c}\n"
        )

    def drop_table(self) -> str:
        return f"add table inet {self.name}\ndelete table inet {self.name}\n"


def namespace_table(slot: Slot) -> str:
    """The fixed table inside a sandbox's namespace."""
    up = slot.ns_device
    return f"""table inet grove {{
  chain input {{
    type filter hook input priority filter; policy drop;
    iif lo accept
    ct state established,related accept
    iifname "{TAP}" ip daddr {DNS_IP} udp dport 53 accept
  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    iifname "{TAP}" ip saddr != {GUEST_IP} drop
    meta l4proto tcp ct state invalid reject with tcp reset
    ct state invalid drop
    iifname "{TAP}" oifname "{up}" accept
    iifname "{up}" oifname "{TAP}" ct state established,related accept
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "{up}" masquerade
  }}
}}
"""
