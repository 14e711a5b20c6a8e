"""grove env list|pull|inspect|prune."""

from __future__ import annotations

import time

from engine.cli.context import Context
from engine.cli.output import Progress, emit_json, iec, table
from engine.client import GroveError, PullProgress


def list_(ctx: Context) -> int:
    environments = ctx.client.environments()
    if ctx.json:
        emit_json([e.to_json() for e in environments])
        return 0
    rows = [
        [e.name, "cached" if e.cached else "not pulled", iec(e.size_bytes) if e.cached else "-",
         "ready" if e.template_ready else "-", e.description]
        for e in environments
    ]  # fmt: skip
    print(table(["NAME", "STATUS", "SIZE", "TEMPLATE", "DESCRIPTION"], rows))
    return 0


def pull(ctx: Context) -> int:
    a = ctx.args
    progress = Progress(enabled=not ctx.json)
    started = time.monotonic()
    final: PullProgress | None = None
    for update in ctx.client.pull(a.name, force=a.force, warm=not a.no_warm):
        if update.done:
            final = update
        else:
            progress.update(update.stage, update.fraction)
    if final is None or final.environment is None:
        raise GroveError(
            "pull_failed", f"the pull of {a.name} ended early", "retry; see the engine log"
        )
    took = time.monotonic() - started
    if ctx.json:
        emit_json({**final.environment.to_json(), "cache_hit": final.cache_hit,
                   "seconds": round(took, 2)})  # fmt: skip
    else:
        how = "cache hit" if final.cache_hit else "built"
        progress.finish(f"{a.name}: {how} in {took:.1f} s ({iec(final.environment.size_bytes)})")
    return 0


def inspect(ctx: Context) -> int:
    env = ctx.client.environment(ctx.args.name)
    if ctx.json:
        emit_json(env.to_json())
    else:
        for key, value in env.to_json().items():
            print(f"{key:15} {'-' if value is None else value}")
    return 0


def prune(ctx: Context) -> int:
    reply = ctx.client.prune()
    if ctx.json:
        emit_json(reply.to_json())
    else:
        print(f"freed {iec(reply.bytes_freed)}; removed {len(reply.removed)} unused item(s)")
    return 0
