"""A sandbox's network policy: what it may reach, parsed and validated in one place.

``off``        no traffic at all, not even published ports;
``published``  only ports published with ``service start --publish`` (ingress), no egress;
``egress``     outbound to anywhere, plus published ports;
``allow=…``    outbound only to the listed hosts, CIDRs and ports, plus published ports.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum

from engine.errors import invalid

POLICY_HELP = "pass --network off, published, egress or allow=HOST[:PORT],..."
MAX_ALLOW_RULES = 64


class Mode(StrEnum):
    OFF = "off"
    PUBLISHED = "published"
    EGRESS = "egress"
    ALLOW = "allow"


@dataclass(frozen=True)
class AllowRule:
    """One allowed destination: a name (resolved and pinned by the engine), an address or a
    CIDR; with a TCP/UDP port, or every port when None."""

    host: str
    port: int | None = None

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        """The address or CIDR, or None when host is a name."""
        try:
            return ipaddress.ip_network(self.host, strict=False)
        except ValueError:
            return None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and "/" not in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


@dataclass(frozen=True)
class NetworkPolicy:
    mode: Mode
    allow: tuple[AllowRule, ...] = ()

    @property
    def egress(self) -> bool:
        """Any outbound traffic at all (to everywhere, or to the allowed list)."""
        return self.mode in (Mode.EGRESS, Mode.ALLOW)

    @property
    def ingress(self) -> bool:
        """Published ports may be reached."""
        return self.mode is not Mode.OFF

    @property
    def names(self) -> list[str]:
        """The allowed destinations given as names (the engine resolves and pins them)."""
        return [r.host for r in self.allow if r.network is None]

    def __str__(self) -> str:
        if self.mode is Mode.ALLOW:
            return "allow=" + ",".join(str(r) for r in self.allow)
        return self.mode.value


OFF = NetworkPolicy(Mode.OFF)
PUBLISHED = NetworkPolicy(Mode.PUBLISHED)
EGRESS = NetworkPolicy(Mode.EGRESS)


def parse(text: str) -> NetworkPolicy:
    """'off' | 'published' | 'egress' | 'allow=HOST[:PORT],...' (HOST: name, address, CIDR,
    or [IPv6]); a clear error for anything else."""
    value = text.strip()
    for simple in (OFF, PUBLISHED, EGRESS):
        if value == simple.mode.value:
            return simple
    if not value.startswith("allow="):
        raise invalid(f"unknown network policy '{text}'", POLICY_HELP)
    items = [item.strip() for item in value.removeprefix("allow=").split(",")]
    if not any(items):
        raise invalid("allow= names no host", "e.g. --network allow=10.1.2.3:443,example.org")
    if len(items) > MAX_ALLOW_RULES:
        raise invalid(
            f"allow= lists {len(items)} hosts; at most {MAX_ALLOW_RULES}",
            "allow a CIDR instead of many single addresses",
        )
    rules = tuple(_rule(item) for item in items)
    return NetworkPolicy(Mode.ALLOW, tuple(dict.fromkeys(rules)))


def _rule(item: str) -> AllowRule:
    if not item:
        raise invalid("allow= has an empty entry", "separate hosts with single commas")
    host, port = item, None
    if item.startswith("["):  # [IPv6] or [IPv6]:PORT
        end = item.find("]")
        if end < 0:
            raise invalid(f"allow entry '{item}' has no closing ']'", "write [IPv6]:PORT")
        host, rest = item[1:end], item[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise invalid(f"allow entry '{item}' is malformed", "write [IPv6]:PORT")
            port = _port(item, rest[1:])
    elif item.count(":") == 1:
        host, text = item.split(":")
        port = _port(item, text)
    rule = AllowRule(host, port)
    if rule.network is None and not _is_hostname(host):
        raise invalid(
            f"allow entry '{item}' is neither a host name, an address nor a CIDR",
            "e.g. allow=10.1.2.3, allow=10.1.0.0/16:443 or allow=example.org:443",
        )
    return rule


def _port(item: str, text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise invalid(f"allow entry '{item}' has an invalid port", "ports are 1 to 65535")
    return int(text)


def _is_hostname(host: str) -> bool:
    if not host or len(host) > 253:
        return False
    labels = host.rstrip(".").split(".")
    return all(
        0 < len(label) <= 63
        and label[0] != "-"
        and label[-1] != "-"
        and all(c.isalnum() or c == "-" for c in label)
        for label in labels
    )
