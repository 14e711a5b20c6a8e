"""What sandbox networking needs from this host, checked for `grove doctor`."""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from engine.errors import GroveError
from engine.net import netns, nft


@dataclass(frozen=True)
class NetCheck:
    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str
    remedy: str = ""


def checks() -> list[NetCheck]:
    if os.geteuid() != 0:
        return [
            NetCheck(
                "network", "warn", "not root: user-mode networking (off, published, egress)",
                "run the engine as root for a namespace per sandbox, live policy changes "
                "and allow=",
            )
        ]  # fmt: skip
    found = [_tun(), _nftables(), _namespaces(), _uplink()]
    if os.environ.get("GROVE_NETWORK_BACKEND") == "user":
        found.insert(0, NetCheck("network", "ok", "user-mode (GROVE_NETWORK_BACKEND=user)"))
    return found


def _tun() -> NetCheck:
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR)
    except OSError as exc:
        return NetCheck("tun", "fail", f"/dev/net/tun: {exc.strerror}",
                        "modprobe tun (or set GROVE_NETWORK_BACKEND=user)")  # fmt: skip
    os.close(fd)
    return NetCheck("tun", "ok", "/dev/net/tun opens")


def _nftables() -> NetCheck:
    try:
        nft.run_here("list tables")
    except GroveError as exc:
        return NetCheck("nftables", "fail", exc.message, exc.remedy)
    return NetCheck("nftables", "ok", "libnftables answers")


def _namespaces() -> NetCheck:
    """Make a namespace, turn forwarding on inside it, and remove it again."""
    name = f"grove-doctor-{secrets.token_hex(3)}"
    try:
        netns.create(name)
    except OSError as exc:
        return NetCheck("netns", "fail", f"cannot make a network namespace: {exc}",
                        "run as root on a kernel with CONFIG_NET_NS")  # fmt: skip
    try:

        def forward() -> str:
            netns.write_sysctl("net.ipv4.ip_forward", "1")
            return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()

        value = netns.run_in(name, forward)
    except OSError as exc:
        return NetCheck("netns", "fail", f"cannot enable forwarding in a namespace: {exc}",
                        "check that /proc/sys is writable for the engine")  # fmt: skip
    finally:
        with contextlib.suppress(OSError):
            netns.remove(name)
    if value != "1":
        return NetCheck("netns", "fail", "ip_forward does not stay on inside a namespace",
                        "check sysctl restrictions on this host")  # fmt: skip
    covered = netns.hidden("grove-")
    if covered:
        return NetCheck("netns", "warn", f"{len(covered)} namespace(s) hidden under a second "
                        f"mount of {netns.NETNS_DIR}: {', '.join(covered[:3])}",
                        f"run 'umount {netns.NETNS_DIR}' once no other tool uses it")  # fmt: skip
    return NetCheck("netns", "ok", "namespaces, veth and forwarding inside them work")


def _uplink() -> NetCheck:
    """egress reaches beyond this host only if the host forwards what comes back in."""
    device = _default_route_device()
    if device is None:
        return NetCheck("egress uplink", "warn", "no default route: egress reaches this host's "
                        "own networks only")  # fmt: skip
    path = Path(f"/proc/sys/net/ipv4/conf/{device}/forwarding")
    try:
        on = path.read_text().strip() == "1"
    except OSError:
        on = False
    if on:
        return NetCheck("egress uplink", "ok", f"{device} forwards (egress can leave the host)")
    return NetCheck(
        "egress uplink", "warn", f"{device} does not forward: egress stops at this host",
        f"sysctl -w net.ipv4.conf.{device}.forwarding=1 (or net.ipv4.ip_forward=1)",
    )  # fmt: skip


def _default_route_device() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/route").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 2 and fields[1] == "00000000":
                return fields[0]
    return None
