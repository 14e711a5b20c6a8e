"""Detached shells: a PTY an agent drives turn by turn with read and write (full)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from engine.client import models as m
from engine.mcp.registry import Ctx, engine, tool
from engine.mcp.results import ShellList
from engine.mcp.tools.common import Cwd, SandboxRef, SecretEnv

ShellId = Annotated[str, Field(min_length=1, description="the shell's id (from shell_open)")]


@tool("full", "Open a shell")
async def shell_open(
    ctx: Ctx,
    sandbox: SandboxRef,
    cols: Annotated[int, Field(ge=1, le=1000, description="terminal width")] = 120,
    rows: Annotated[int, Field(ge=1, le=1000, description="terminal height")] = 40,
    cwd: Cwd = None,
    shell: Annotated[
        str | None, Field(description="the shell to run (default bash, else sh)")
    ] = None,
    secret_env: SecretEnv = None,
) -> m.Shell:
    """Open a shell that keeps running between calls (its state: cwd, variables, jobs);
    drive it with shell_write and shell_read."""
    client = await engine(ctx)
    return await client.shell_open(
        sandbox, cols=cols, rows=rows, cwd=cwd or "", shell=shell or "",
        secret_env=list(secret_env or ()),
    )  # fmt: skip


@tool("full", "Read a shell's output", read_only=True, idempotent=True)
async def shell_read(
    ctx: Ctx,
    sandbox: SandboxRef,
    shell_id: ShellId,
    cursor: Annotated[
        int, Field(ge=0, description="byte offset to read from: the last next_cursor")
    ] = 0,
    max_chars: Annotated[int, Field(ge=1, le=1_000_000, description="read at most")] = 65536,
    wait_ms: Annotated[
        int, Field(ge=0, le=30000, description="wait this long for output when there is none")
    ] = 0,
) -> m.ShellRead:
    """Output since cursor (terminal bytes, escapes included); pass next_cursor back."""
    client = await engine(ctx)
    return await client.shell_read(sandbox, shell_id, cursor, max_chars, wait_ms)


@tool("full", "Type into a shell")
async def shell_write(
    ctx: Ctx,
    sandbox: SandboxRef,
    shell_id: ShellId,
    input: Annotated[str, Field(description="text to type")],
    enter: Annotated[bool, Field(description="press Enter after it")] = True,
) -> m.Shell:
    """Type text into a shell, as at a keyboard (Enter added unless enter is false)."""
    client = await engine(ctx)
    data = (input + "\n" if enter else input).encode()
    return await client.shell_write(sandbox, shell_id, data)


@tool("full", "Signal a shell's job")
async def shell_signal(
    ctx: Ctx,
    sandbox: SandboxRef,
    shell_id: ShellId,
    signal: Annotated[
        Literal["INT", "TERM", "HUP", "KILL"], Field(description="INT is Ctrl+C")
    ] = "INT",
) -> m.Shell:
    """Signal the shell's foreground job, as Ctrl+C would (INT)."""
    client = await engine(ctx)
    return await client.shell_signal(sandbox, shell_id, signal)


@tool("full", "Close a shell", destructive=True, idempotent=True)
async def shell_close(ctx: Ctx, sandbox: SandboxRef, shell_id: ShellId) -> m.Shell:
    """End a shell and everything it runs."""
    client = await engine(ctx)
    return await client.shell_close(sandbox, shell_id)


@tool("full", "List shells", read_only=True, idempotent=True)
async def shell_list(ctx: Ctx, sandbox: SandboxRef) -> ShellList:
    """A sandbox's shells and their state."""
    client = await engine(ctx)
    return ShellList(shells=await client.shells(sandbox))
