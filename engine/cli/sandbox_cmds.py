"""grove sandbox create|ls|stop|start|terminate|ping, grove ps, grove logs."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from engine.api import grove_pb2 as pb
from engine.cli.context import Context
from engine.cli.output import age, emit_json, table, waiting
from engine.errors import GroveError, invalid


def sandbox_dict(sandbox: pb.Sandbox) -> dict[str, Any]:
    return {
        "id": sandbox.id,
        "name": sandbox.name,
        "environment": sandbox.environment,
        "phase": sandbox.phase,
        "vcpus": sandbox.vcpus,
        "mem_mib": sandbox.mem_mib,
        "pid": sandbox.pid or None,
        "parent_id": sandbox.parent_id or None,
        "created_at": sandbox.created_at,
        "error": sandbox.error or None,
        "create_ms": sandbox.create_ms or None,
    }


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


def create_request(a: Any, secrets: dict[str, str] | None = None) -> pb.CreateSandboxRequest:
    """0 means 'default' on the wire, so an explicit 0 or negative size is refused here."""
    if a.vcpus is not None and a.vcpus < 1:
        raise invalid(f"invalid vcpus {a.vcpus}", "pass --vcpus 1 or more")
    if a.mem_mib is not None and a.mem_mib < 1:
        raise invalid(f"invalid memory size {a.mem_mib} MiB", "pass --mem-mib 128 or more")
    return pb.CreateSandboxRequest(
        environment=a.environment,
        name=a.name or "",
        vcpus=a.vcpus or 0,
        mem_mib=a.mem_mib or 0,
        secrets=secrets or {},
        from_snapshot=getattr(a, "from_snapshot", None) or "",
    )


def create(ctx: Context) -> int:
    a = ctx.args
    if not a.environment and not a.from_snapshot:
        raise invalid("no environment given", "pass one, e.g. 'debian:12', or --from-snapshot NAME")
    secrets = parse_pairs(a.secret, "--secret", from_env=True)
    what = "creating sandbox (the first one of an environment boots it once)"
    with waiting(what, enabled=not ctx.json):
        sandbox = ctx.client.call("CreateSandbox", create_request(a, secrets))
    if ctx.json:
        emit_json(sandbox_dict(sandbox))
    else:
        print(sandbox.id)
    return 0


def ls(ctx: Context) -> int:
    reply = ctx.client.call("ListSandboxes", pb.ListSandboxesRequest(all=ctx.args.all))
    if ctx.json:
        emit_json([sandbox_dict(s) for s in reply.sandboxes])
        return 0
    now = time.time()
    rows = [
        [s.id, s.name, s.environment, s.phase, str(s.vcpus), f"{s.mem_mib}M",
         age(s.created_at, now), s.parent_id or ""]
        for s in reply.sandboxes
    ]  # fmt: skip
    if not rows:
        print("no sandboxes; create one with 'grove sandbox create debian:12'")
        return 0
    print(table(["ID", "NAME", "ENV", "PHASE", "VCPU", "MEM", "AGE", "PARENT"], rows))
    return 0


def _lifecycle(ctx: Context, method: str, verb: str) -> int:
    sandbox = ctx.client.call(method, pb.SandboxRef(ref=ctx.args.id))
    if ctx.json:
        emit_json(sandbox_dict(sandbox))
    else:
        print(f"{sandbox.id} {verb}")
    return 0


def stop(ctx: Context) -> int:
    return _lifecycle(ctx, "StopSandbox", "stopped")


def start(ctx: Context) -> int:
    with waiting("booting from its disk", enabled=not ctx.json):
        return _lifecycle(ctx, "StartSandbox", "running")


def terminate(ctx: Context) -> int:
    a = ctx.args
    if a.all == bool(a.id):
        raise invalid("pass exactly one of ID or --all", "e.g. 'grove sandbox terminate sb-1234'")
    if not a.all:
        return _lifecycle(ctx, "TerminateSandbox", "terminated")
    reply = ctx.client.call("ListSandboxes", pb.ListSandboxesRequest(all=False))
    done: list[dict[str, Any]] = []
    for sandbox in reply.sandboxes:
        try:
            ended = ctx.client.call("TerminateSandbox", pb.SandboxRef(ref=sandbox.id))
            done.append(sandbox_dict(ended))
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
    reply = ctx.client.call("PingAgent", pb.SandboxRef(ref=ctx.args.id))
    if ctx.json:
        emit_json({"round_trip_ms": reply.round_trip_ms})
    else:
        print(f"agent round trip {reply.round_trip_ms:.3f} ms")
    return 0


def logs(ctx: Context) -> int:
    a = ctx.args
    stream = ctx.client.stream("SandboxEvents", pb.EventsRequest(sandbox=a.id, follow=a.follow))
    for event in stream:
        detail = json.loads(event.detail_json or "{}")
        if ctx.json:
            print(
                json.dumps(
                    {
                        "seq": event.seq,
                        "ts": event.ts,
                        "kind": event.kind,
                        "sandbox_id": event.sandbox_id,
                        "detail": detail,
                    }
                ),
                flush=True,
            )
        else:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.ts))
            if event.kind == "console":  # a guest console line: print it as it was
                extra = str(detail.get("line", ""))
            else:
                extra = " ".join(f"{k}={v}" for k, v in detail.items())
            print(f"{stamp} {event.kind:<14} {extra}".rstrip(), flush=True)
    return 0
