"""grove sandbox fork|reset|diff, grove snapshot create|ls|rm, grove tree."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from engine.cli import net_cmds, ttl_cmds
from engine.cli.context import Context
from engine.cli.output import age, emit_json, table, waiting
from engine.client import ForkResult, LineageNode
from engine.errors import invalid
from engine.sandbox import ttl

PHASE_MARK = {
    "running": "●", "paused": "◐", "stopped": "○", "creating": "◌", "starting": "◌",
    "resetting": "◌", "stopping": "◌", "terminating": "◌", "failed": "✗",
    "terminated": "·", "ready": "◆",
}  # fmt: skip


def register(
    sandbox: argparse._SubParsersAction[Any],
    snap: argparse._SubParsersAction[Any],
    verbs: argparse._SubParsersAction[Any],
    verb: Any,
) -> None:
    p = verb(sandbox, "fork", fork, "fork a running sandbox into children (it keeps running)")
    p.add_argument("id")
    p.add_argument("--replicas", type=int, default=1, help="number of children (default 1)")
    p.add_argument("--name", help="name prefix: children are PREFIX-1..N")
    p.add_argument("--allow-secrets", action="store_true", help="fork even if it holds secrets")
    net_cmds.add_option(p, net_cmds.FORK_HELP)
    ttl_cmds.add_option(p, ttl_cmds.FORK_HELP)
    p.add_argument("--memory", choices=("auto", "delta", "full"), default="",
                   help="memory layout: delta (children hold the source's own pages), full "
                   "(one new shared copy), auto (the cheaper; default)")  # fmt: skip
    p = verb(sandbox, "reset", reset, "restore a sandbox to a snapshot (default: its creation)")
    p.add_argument("id")
    p.add_argument("--snapshot", help="named snapshot to reset to")
    p = verb(sandbox, "diff", diff, "files changed since the parent state or a snapshot")
    p.add_argument("id")
    p.add_argument("--against", nargs="+", metavar="parent|snapshot NAME", default=["parent"])
    p.add_argument("--path", action="append", help="limit to this guest path (repeat)")

    p = verb(snap, "create", snapshot_create, "snapshot a running sandbox under a name")
    p.add_argument("id")
    p.add_argument("name")
    p = verb(snap, "ls", snapshot_ls, "list named snapshots", ("list",))
    p.add_argument("id", nargs="?", default="")
    p = verb(snap, "rm", snapshot_rm, "remove a snapshot nothing depends on")
    p.add_argument("name")

    p = verb(verbs, "tree", tree, "the lineage tree: environments, snapshots, sandboxes, forks")
    p.add_argument("id", nargs="?", default="")


def fork(ctx: Context) -> int:
    a = ctx.args
    if a.replicas < 1:
        raise invalid(f"invalid replica count {a.replicas}", "pass --replicas 1 or more")
    network = net_cmds.policy_arg(a.network)
    ttl_s = ttl_cmds.ttl_arg(a.ttl)  # before any engine call, as the policy
    with waiting(f"forking {a.id} into {a.replicas}", enabled=not ctx.json):
        reply = _fork_call(ctx, a, network, ttl_s)
    return _print_fork(ctx, reply)


def _fork_call(ctx: Context, a: Any, network: str = "", ttl_s: float | None = None) -> ForkResult:
    return ctx.client.fork(a.id, replicas=a.replicas, name_prefix=a.name or "",
                           allow_secrets=a.allow_secrets, network=network,
                           memory=a.memory, ttl_s=ttl_s)  # fmt: skip


def _print_fork(ctx: Context, reply: ForkResult) -> int:
    if ctx.json:
        emit_json({**reply.to_json(), "paused_ms": round(reply.paused_ms, 1)})
    else:
        for child in reply.children:
            print(child.id)
        print(f"source {reply.source} paused {reply.paused_ms:.0f} ms ({reply.memory} memory)",
              file=sys.stderr)  # fmt: skip
    return 0


def reset(ctx: Context) -> int:
    a = ctx.args
    sandbox = ctx.client.reset(a.id, snapshot=a.snapshot or "")
    if ctx.json:
        emit_json(sandbox.to_json())
    else:
        print(f"{sandbox.id} reset")
    return 0


def _against(words: list[str]) -> str:
    if words == ["parent"]:
        return ""
    if len(words) == 2 and words[0] == "snapshot":
        return words[1]
    raise invalid(
        f"invalid --against {' '.join(words)}", "use --against parent or --against snapshot NAME"
    )


def diff(ctx: Context) -> int:
    a = ctx.args
    reply = ctx.client.diff(a.id, against_snapshot=_against(a.against), paths=a.path or [])
    if ctx.json:
        emit_json(reply.to_json())
        return 0
    mark = {"added": "A", "modified": "M", "deleted": "D"}
    print(f"# {reply.sandbox} against {reply.against}: {len(reply.changes)} change(s)")
    for c in reply.changes:
        digest = (c.new_sha256 or c.old_sha256 or "")[:12]
        print(f"{mark.get(c.change, '?')} {c.path}{'/' if c.kind == 'dir' else ''}  {digest}")
    for c in reply.changes:
        if c.patch:
            print(c.patch, end="" if c.patch.endswith("\n") else "\n")
    return 0


def snapshot_create(ctx: Context) -> int:
    snap = ctx.client.snapshot(ctx.args.id, name=ctx.args.name)
    if ctx.json:
        emit_json(snap.to_json())
    else:
        print(snap.name)
    return 0


def snapshot_ls(ctx: Context) -> int:
    snapshots = ctx.client.snapshots(ctx.args.id)
    if ctx.json:
        emit_json([s.to_json() for s in snapshots])
        return 0
    if not snapshots:
        print("no snapshots; take one with 'grove snapshot create ID NAME'")
        return 0
    now = time.time()
    # SECRETS: a snapshot of a sandbox with secrets holds them in its memory (names only).
    rows = [[s.name, s.source or "-", s.environment or "-", age(s.created_at, now),
             ", ".join(s.secret_names) or "none", ", ".join(s.dependents) or "-"]
            for s in snapshots]  # fmt: skip
    print(table(["NAME", "SOURCE", "ENV", "AGE", "SECRETS", "DEPENDENTS"], rows))
    return 0


def snapshot_rm(ctx: Context) -> int:
    snap = ctx.client.delete_snapshot(ctx.args.name)
    if ctx.json:
        emit_json(snap.to_json())
    else:
        print(f"{snap.name} removed")
    return 0


def _node_dict(
    node: LineageNode, now: float, networks: dict[str, str], expiries: dict[str, float | None]
) -> dict[str, Any]:
    """The node as JSON, with its age (the tree's own view) next to each created_at, and a
    sandbox's network policy and expires_at (None for other nodes, a sandbox no longer
    listed, or one without a TTL)."""
    return {
        **node.to_json(), "phase": node.phase or "",
        "age_s": round(now - node.created_at, 1) if node.created_at else None,
        "network": networks.get(node.id) if node.kind == "sandbox" else None,
        "expires_at": expiries.get(node.id) if node.kind == "sandbox" else None,
        "children": [_node_dict(c, now, networks, expiries) for c in node.children],
    }  # fmt: skip


def tree(ctx: Context) -> int:
    roots = ctx.client.lineage(ctx.args.id)
    # Lineage nodes name no policy: each sandbox's comes from the listing.
    listed = ctx.client.sandboxes(all=True)
    networks = {s.id: s.network for s in listed if s.network}
    expiries = {s.id: s.expires_at for s in listed}  # and so is each one's expiry
    now = time.time()
    if ctx.json:
        emit_json([_node_dict(r, now, networks, expiries) for r in roots])
        return 0

    def render(node: LineageNode, prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└─ " if last else "├─ ")
        mark = PHASE_MARK.get(node.phase or "", "?")
        label = node.name if node.name == node.id else f"{node.name} ({node.id})"
        when = f"  {age(node.created_at, now)}" if node.created_at else ""
        kind = "" if node.kind == "sandbox" else f" [{node.kind}]"
        net = f"  net {net_cmds.compact(networks[node.id])}" if node.id in networks else ""
        if node.id in expiries:
            left = ttl.remaining(expiries[node.id], now)
            net += "  expires never" if left == ttl.NEVER else f"  expires in {left}"
        print(f"{prefix}{branch}{mark} {label}{kind}  {node.phase or ''}{when}{net}")
        child_prefix = prefix + ("" if top else ("   " if last else "│  "))
        for i, child in enumerate(node.children):
            render(child, child_prefix, i == len(node.children) - 1, False)

    if not roots:
        print("nothing yet; pull an environment with 'grove env pull debian:12'")
    for root in roots:
        render(root, "", True, True)
    return 0
