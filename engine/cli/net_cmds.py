"""--network on create, run and fork, and grove sandbox network: what a sandbox may reach."""

from __future__ import annotations

import argparse
from typing import Any

from engine.cli.context import Context
from engine.cli.output import emit_json, iec
from engine.client import NetworkInfo
from engine.errors import GroveError
from engine.net import policy as net_policy

POLICIES = "off | published | egress | allow=HOST[:PORT],..."
CREATE_HELP = f"{POLICIES} (default: the engine's, 'published')"
FORK_HELP = f"{POLICIES} (default: each child inherits the source's)"
#: Longer allow= lists are cut to their first rule in listings (--json has them whole).
COMPACT_WIDTH = 32


def add_option(p: argparse.ArgumentParser, help_: str = CREATE_HELP) -> None:
    p.add_argument("--network", metavar="POLICY", help=help_)


def policy_arg(text: str | None, flag: str = "--network") -> str:
    """A --network/--policy value checked here, so bad input fails before any engine call;
    None (not given) is '' on the wire: the engine's default, or a fork's inheritance."""
    if text is None:
        return ""
    try:
        return str(net_policy.parse(text))
    except GroveError as exc:
        # The remedy names the flag the user typed.
        raise GroveError(exc.code, exc.message, exc.remedy.replace("--network", flag)) from None


def compact(policy: str | None) -> str:
    """A policy short enough for a table cell or a tree line: 'allow=example.org:443,+2'."""
    if not policy:
        return "-"
    if len(policy) <= COMPACT_WIDTH or not policy.startswith("allow="):
        return policy
    rules = policy.removeprefix("allow=").split(",")
    return f"allow={rules[0]},+{len(rules) - 1}" if len(rules) > 1 else policy


def render(info: NetworkInfo) -> str:
    rows = [
        ("policy", info.policy),
        ("backend", info.backend),
        ("guest", info.guest_address or "-"),
        ("namespace", info.namespace or "-"),
        ("host", info.host_address or "-"),
        ("pinned", ", ".join(info.pinned) or "-"),
        ("rx", iec(info.rx_bytes)),
        ("tx", iec(info.tx_bytes)),
    ]
    lines = [f"{info.sandbox_id}"] + [f"  {key:<10} {value}" for key, value in rows]
    if info.applied_ms is not None:
        lines.append(f"applied in {info.applied_ms:.1f} ms")
    return "\n".join(lines)


def register(sandbox: argparse._SubParsersAction[Any], verb: Any) -> None:
    p = verb(
        sandbox, "network", network, "a sandbox's network policy and traffic (--policy: change it)"
    )
    p.add_argument("id")
    p.add_argument("--policy", metavar="POLICY", help=f"{POLICIES}: change it (live when running)")


def network(ctx: Context) -> int:
    a = ctx.args
    change = policy_arg(a.policy, "--policy") if a.policy is not None else None
    info = ctx.client.network(a.id, change)
    if ctx.json:
        emit_json(info.to_json())
    else:
        print(render(info))
    return 0
