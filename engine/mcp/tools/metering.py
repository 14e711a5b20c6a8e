"""What sandboxes really cost: CoW-aware metering (full)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from engine.client import models as m
from engine.mcp.registry import Ctx, engine, tool


@tool("full", "Sandbox costs (top)", read_only=True)
async def sandbox_top(
    ctx: Ctx,
    all: Annotated[bool, Field(description="include sandboxes that are not running")] = False,
) -> m.MeterSample:
    """Each sandbox's unique and shared memory, VMM overhead, disk, CPU and network traffic,
    and the host's naive vs copy-on-write-aware totals (null: no datum)."""
    client = await engine(ctx)
    return await client.top(all=all)
