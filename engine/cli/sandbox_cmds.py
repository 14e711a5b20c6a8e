"""grove sandbox create|ls|stop|start|terminate|ping, grove ps, grove logs."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from engine.cli import secret_opts, ttl_cmds
from engine.cli.context import Context
from engine.cli.net_cmds import compact, policy_arg
from engine.cli.output import age, emit_json, table, waiting
from engine.client import Event, InventoryUpdate, Sandbox
from engine.config import MAX_WATCH_REPLAY
from engine.errors import GroveError, invalid
from engine.sandbox import ttl


def parse_pairs(items: list[str] | None, what: str, from_env: bool = False) -> dict[str, str]:
    """K=V pairs; with from_env a bare K takes its value from this process's environment."""
    pairs: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            if from_env and key in os.environ:
                value = os.environ[key]
            else:
                raise invalid(
                    f"invalid {what} '{item}'",
                    f"use {what} KEY=VALUE"
                    + (" or KEY set in your environment" if from_env else ""),
                )
        if not key:
            raise invalid(f"invalid {what} '{item}': empty name", f"use {what} KEY=VALUE")
        pairs[key] = value
    return pairs


def create_sandbox(ctx: Context, secrets: dict[str, str] | None = None) -> Sandbox:
    """0 means 'default' on the wire, so an explicit 0 or negative size is refused here."""
    a = ctx.args
    if a.vcpus is not None and a.vcpus < 1:
        raise invalid(f"invalid vcpus {a.vcpus}", "pass --vcpus 1 or more")
    if a.mem_mib is not None and a.mem_mib < 1:
        raise invalid(f"invalid memory size {a.mem_mib} MiB", "pass --mem-mib 128 or more")
    network = policy_arg(
        getattr(a, "network", None)
    )  # before ctx.client: bad input never reaches the engine
    ttl_s = ttl_cmds.ttl_arg(getattr(a, "ttl", None))
    return ctx.client.create(
        environment=a.environment or "",
        name=a.name or "",
        vcpus=a.vcpus or 0,
        mem_mib=a.mem_mib or 0,
        secrets=secrets or {},
        from_snapshot=getattr(a, "from_snapshot", None) or "",
        network=network,
        ttl_s=ttl_s,
    )


def create(ctx: Context) -> int:
    a = ctx.args
    if not a.environment and not a.from_snapshot:
        raise invalid("no environment given", "pass one, e.g. 'debian:12', or --from-snapshot NAME")
    secrets = secret_opts.create_values(a)
    what = "creating sandbox (the first one of an environment boots it once)"
    with waiting(what, enabled=not ctx.json):
        sandbox = create_sandbox(ctx, secrets)
    if ctx.json:
        emit_json(sandbox.to_json())
    else:
        print(sandbox.id)
    return 0


def ls(ctx: Context) -> int:
    sandboxes = ctx.client.sandboxes(all=ctx.args.all)
    if ctx.json:
        emit_json([s.to_json() for s in sandboxes])
        return 0
    now = time.time()
    rows = [
        [s.id, s.name, s.environment, s.phase, str(s.vcpus), f"{s.mem_mib}M",
         compact(s.network), age(s.created_at, now), ttl.remaining(s.expires_at, now),
         s.parent_id or ""]
        for s in sandboxes
    ]  # fmt: skip
    if not rows:
        print("no sandboxes; create one with 'grove sandbox create debian:12'")
        return 0
    headers = ["ID", "NAME", "ENV", "PHASE", "VCPU", "MEM", "NET", "AGE", "EXPIRES IN", "PARENT"]
    print(table(headers, rows))
    return 0


def _lifecycle(ctx: Context, call: Callable[[str], Sandbox], verb: str) -> int:
    sandbox = call(ctx.args.id)
    if ctx.json:
        emit_json(sandbox.to_json())
    else:
        print(f"{sandbox.id} {verb}")
    return 0


def stop(ctx: Context) -> int:
    return _lifecycle(ctx, ctx.client.stop, "stopped")


def start(ctx: Context) -> int:
    with waiting("booting from its disk", enabled=not ctx.json):
        return _lifecycle(ctx, ctx.client.start, "running")


def terminate(ctx: Context) -> int:
    a = ctx.args
    if a.all == bool(a.id):
        raise invalid("pass exactly one of ID or --all", "e.g. 'grove sandbox terminate sb-1234'")
    if not a.all:
        return _lifecycle(ctx, ctx.client.terminate, "terminated")
    done: list[dict[str, Any]] = []
    for sandbox in ctx.client.sandboxes(all=False):
        try:
            done.append(ctx.client.terminate(sandbox.id).to_json())
        except GroveError as exc:
            if exc.code != "already_terminated":
                raise
    if ctx.json:
        emit_json(done)
    else:
        for item in done:
            print(f"{item['id']} terminated")
    return 0


def ping(ctx: Context) -> int:
    round_trip_ms = ctx.client.ping(ctx.args.id)
    if ctx.json:
        emit_json({"round_trip_ms": round_trip_ms})
    else:
        print(f"agent round trip {round_trip_ms:.3f} ms")
    return 0


def logs(ctx: Context) -> int:
    a = ctx.args
    if a.all == bool(a.id):
        raise invalid(
            "pass exactly one of ID or --all",
            "e.g. 'grove logs sb-1234', or 'grove logs --all' for every sandbox's events",
        )
    if a.all:
        return _all_logs(ctx)
    seen = [0]  # the newest event's seq: a reopened follow goes on after it
    for event in ctx.across_drops(lambda: ctx.client.events(a.id, follow=a.follow, after=seen[0])):
        seen[0] = event.seq
        _print_event(ctx, event, with_sandbox=False)
    return 0


def _all_logs(ctx: Context) -> int:
    """Every sandbox's events through the engine's inventory watch: the newest ones, then
    (--follow) each as it happens."""
    cursor = [0]

    def updates() -> Iterator[InventoryUpdate]:
        # Reopened after a drop, the watch goes on after the last update seen.
        after = cursor[0]
        return ctx.client.watch_inventory(after, 0 if after else MAX_WATCH_REPLAY)

    for update in ctx.across_drops(updates):
        cursor[0] = update.cursor
        for event in update.events:
            _print_event(ctx, event, with_sandbox=True)
        if not ctx.args.follow:
            break
    return 0


def _print_event(ctx: Context, event: Event, with_sandbox: bool) -> None:
    if ctx.json:
        print(json.dumps(event.to_json()), flush=True)
        return
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.ts))
    if event.kind == "console":  # a guest console line: print it as it was
        extra = str(event.detail.get("line", ""))
    else:
        extra = " ".join(f"{k}={v}" for k, v in event.detail.items())
    where = f"{event.sandbox_id} " if with_sandbox else ""
    print(f"{stamp} {where}{event.kind:<14} {extra}".rstrip(), flush=True)
