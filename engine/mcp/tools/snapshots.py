"""Named snapshots, reset and diff (full)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from engine.client import models as m
from engine.mcp.registry import Ctx, engine, tool
from engine.mcp.results import DiffResult, SnapshotList
from engine.mcp.tools.common import SandboxRef

SnapshotName = Annotated[str, Field(min_length=1, max_length=128, description="snapshot name")]


@tool("full", "Take a named snapshot")
async def snapshot_create(ctx: Ctx, sandbox: SandboxRef, name: SnapshotName) -> m.Snapshot:
    """Capture a running sandbox's memory and disk as a named snapshot; it keeps running.
    Create sandboxes from it (sandbox_create from_snapshot) or reset to it."""
    client = await engine(ctx)
    return await client.snapshot(sandbox, name)


@tool("full", "List snapshots", read_only=True, idempotent=True)
async def snapshot_list(
    ctx: Ctx,
    sandbox: Annotated[
        str | None, Field(description="only the snapshots taken of this sandbox")
    ] = None,
) -> SnapshotList:
    """Named snapshots, each with its source and the sandboxes that depend on it."""
    client = await engine(ctx)
    return SnapshotList(snapshots=await client.snapshots(sandbox or ""))


@tool("full", "Delete a snapshot", destructive=True)
async def snapshot_delete(ctx: Ctx, name: SnapshotName) -> m.Snapshot:
    """Delete a named snapshot (refused while sandboxes depend on it)."""
    client = await engine(ctx)
    return await client.delete_snapshot(name)


@tool("full", "Reset a sandbox", destructive=True, idempotent=True)
async def sandbox_reset(
    ctx: Ctx,
    sandbox: SandboxRef,
    snapshot: Annotated[
        str | None, Field(description="a named snapshot; omitted: how the sandbox was created")
    ] = None,
) -> m.Sandbox:
    """Throw a sandbox's state away (memory, processes, files) and restore a snapshot."""
    client = await engine(ctx)
    return await client.reset(sandbox, snapshot or "")


@tool("full", "Diff a sandbox's files", read_only=True, idempotent=True)
async def sandbox_diff(
    ctx: Ctx,
    sandbox: SandboxRef,
    against_snapshot: Annotated[
        str | None, Field(description="compare with this snapshot; omitted: with its parent")
    ] = None,
    paths: Annotated[
        list[str] | None, Field(description="only changes under these guest paths")
    ] = None,
    max_changes: Annotated[
        int, Field(ge=1, le=10000, description="list at most this many changes")
    ] = 500,
) -> DiffResult:
    """Files added, modified and deleted (with sha256, and unified patches of small text
    files) since the sandbox's parent (where it was created or forked) or a snapshot."""
    client = await engine(ctx)
    diff = await client.diff(sandbox, against_snapshot or "", paths or ())
    return DiffResult(
        sandbox=diff.sandbox, against=diff.against, changes=list(diff.changes[:max_changes]),
        total=len(diff.changes), truncated=len(diff.changes) > max_changes,
    )  # fmt: skip
