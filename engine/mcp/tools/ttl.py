"""A sandbox's time to live: set or clear it (full). The engine's reaper terminates a sandbox
whose TTL ran out."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from engine.client import models as m
from engine.mcp.registry import Ctx, engine, tool
from engine.mcp.tools.common import SandboxRef


@tool("full", "Set a sandbox's TTL", idempotent=True)
async def sandbox_set_ttl(
    ctx: Ctx,
    sandbox: SandboxRef,
    ttl_s: Annotated[float, Field(gt=0, description="seconds from now it may still live")],
) -> m.Sandbox:
    """Terminate the sandbox this many seconds from now (replaces its TTL); expires_at in
    the result is when."""
    client = await engine(ctx)
    return await client.set_ttl(sandbox, ttl_s)


@tool("full", "Clear a sandbox's TTL", idempotent=True)
async def sandbox_clear_ttl(ctx: Ctx, sandbox: SandboxRef) -> m.Sandbox:
    """Let the sandbox live until it is terminated."""
    client = await engine(ctx)
    return await client.set_ttl(sandbox, None)
