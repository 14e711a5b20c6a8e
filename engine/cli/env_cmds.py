"""grove env list|pull|inspect|prune."""

from __future__ import annotations

import time
from typing import Any

from engine.api import grove_pb2 as pb
from engine.cli.context import Context
from engine.cli.output import Progress, emit_json, iec, table


def env_dict(env: pb.Environment) -> dict[str, Any]:
    return {
        "name": env.name,
        "description": env.description,
        "cached": env.cached,
        "recipe_hash": env.recipe_hash or None,
        "size_bytes": env.size_bytes if env.cached else None,
        "created_at": env.created_at or None,
        "template_ready": env.template_ready,
        "kernel": env.kernel or None,
        "initramfs": env.initramfs or None,
        "rootfs": env.rootfs or None,
    }


def list_(ctx: Context) -> int:
    reply = ctx.client.call("ListEnvironments", pb.Empty())
    if ctx.json:
        emit_json([env_dict(e) for e in reply.environments])
        return 0
    rows = [
        [e.name, "cached" if e.cached else "not pulled", iec(e.size_bytes) if e.cached else "-",
         "ready" if e.template_ready else "-", e.description]
        for e in reply.environments
    ]  # fmt: skip
    print(table(["NAME", "STATUS", "SIZE", "TEMPLATE", "DESCRIPTION"], rows))
    return 0


def pull(ctx: Context) -> int:
    a = ctx.args
    progress = Progress(enabled=not ctx.json)
    started = time.monotonic()
    final: pb.PullProgress | None = None
    for update in ctx.client.stream(
        "PullEnvironment", pb.PullRequest(name=a.name, force=a.force, warm=not a.no_warm)
    ):
        if update.done:
            final = update
        else:
            progress.update(update.stage, None if update.fraction < 0 else update.fraction)
    assert final is not None
    took = time.monotonic() - started
    if ctx.json:
        emit_json({**env_dict(final.environment), "cache_hit": final.cache_hit,
                   "seconds": round(took, 2)})  # fmt: skip
    else:
        how = "cache hit" if final.cache_hit else "built"
        progress.finish(f"{a.name}: {how} in {took:.1f} s ({iec(final.environment.size_bytes)})")
    return 0


def inspect(ctx: Context) -> int:
    env = ctx.client.call("InspectEnvironment", pb.EnvironmentRef(name=ctx.args.name))
    if ctx.json:
        emit_json(env_dict(env))
    else:
        for key, value in env_dict(env).items():
            print(f"{key:15} {'-' if value is None else value}")
    return 0


def prune(ctx: Context) -> int:
    reply = ctx.client.call("PruneEnvironments", pb.Empty())
    if ctx.json:
        emit_json({"bytes_freed": reply.bytes_freed, "removed": list(reply.removed)})
    else:
        print(f"freed {iec(reply.bytes_freed)}; removed {len(reply.removed)} unused item(s)")
    return 0
