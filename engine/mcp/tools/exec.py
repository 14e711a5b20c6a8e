"""sandbox_exec: run a command to its end, with progress notifications while it runs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated

from pydantic import Field

from engine.client import ExecStream
from engine.client import models as m
from engine.mcp.registry import Ctx, engine, tool
from engine.mcp.results import ExecOutcome
from engine.mcp.tools.common import Cwd, Env, SandboxRef, SecretEnv, command_argv

DEFAULT_OUTPUT = 256 * 1024
MAX_OUTPUT = 4 * 1024 * 1024
#: How often a running command reports progress: at most this often while output comes, and
#: at least this often (HEARTBEAT) while it is silent, so a client sees it is alive.
PROGRESS_EVERY = 0.25
HEARTBEAT = 2.0


class Tail:
    """One stream's output: its byte count, and its last `limit` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = bytearray()
        self.total = 0
        self.lines = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        self.lines += data.count(b"\n")
        self.kept += data
        if len(self.kept) > 2 * self.limit:  # trim now and then, not on every chunk
            del self.kept[: len(self.kept) - self.limit]

    def text(self) -> str:
        return bytes(self.kept[-self.limit :]).decode("utf-8", errors="replace")

    @property
    def truncated(self) -> bool:
        return self.total > self.limit

    def last_line(self) -> str:
        lines = bytes(self.kept[-512:]).decode("utf-8", errors="replace").splitlines()
        return lines[-1][:120] if lines else ""


async def _pump(stream: ExecStream, out: Tail, err: Tail) -> None:
    async for chunk in stream.output():
        (out if chunk.stream == "stdout" else err).add(chunk.data)


async def _report(ctx: Ctx, started: float, out: Tail, err: Tail, total: float | None) -> None:
    elapsed = round(time.monotonic() - started, 2)
    message = (
        f"{elapsed:.1f} s; output so far: stdout {out.total} B ({out.lines} lines), "
        f"stderr {err.total} B ({err.lines} lines)"
    )
    if last := (out.last_line() or err.last_line()):
        message += f"; last line: {last}"
    # progress is the seconds run (it must grow with each notification; output may not),
    # out of timeout_s when there is one.
    await ctx.report_progress(elapsed, total, message)


@tool("core", "Run a command in a sandbox")
async def sandbox_exec(
    ctx: Ctx,
    sandbox: SandboxRef,
    argv: Annotated[
        list[str] | None,
        Field(description='the command as an argument vector, e.g. ["ls", "-la", "/root"]'),
    ] = None,
    command: Annotated[
        str | None,
        Field(description="or a shell command line, run with sh -c (pipes, &&, redirects)"),
    ] = None,
    cwd: Cwd = None,
    env: Env = None,
    timeout_s: Annotated[
        float | None,
        Field(gt=0, description="kill the command's process group after this many seconds"),
    ] = None,
    stdin: Annotated[str | None, Field(description="text fed to the command's stdin")] = None,
    secret_env: SecretEnv = None,
    max_output_bytes: Annotated[
        int,
        Field(
            ge=1,
            le=MAX_OUTPUT,
            description="keep at most this many bytes of each stream (the last ones)",
        ),
    ] = DEFAULT_OUTPUT,
) -> ExecOutcome:
    """Run a command in a running sandbox to its end and return its exit code and output.
    A long command sends progress notifications (output so far) while it runs."""
    run = command_argv(argv, command)
    client = await engine(ctx)
    stream = await client.exec_stream(
        sandbox,
        run,
        env=env,
        cwd=cwd or "",
        timeout_s=timeout_s or 0,
        stdin=stdin is not None,
        secret_env=list(secret_env or ()),
    )
    out, err = Tail(max_output_bytes), Tail(max_output_bytes)
    pump = asyncio.create_task(_pump(stream, out, err))
    try:
        if stdin is not None:
            await stream.write(stdin.encode())
            await stream.close_stdin()
        await _follow(ctx, pump, out, err, timeout_s)
        await pump  # its error, if it failed
    finally:
        if not pump.done():
            # The client cancelled the call: the engine kills the command once we hang up.
            pump.cancel()
            stream.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
    exit_: m.ExecExit | None = stream.exit
    assert exit_ is not None  # output() raises when the exit status never came
    return ExecOutcome(
        exit_code=exit_.exit_code,
        stdout=out.text(),
        stderr=err.text(),
        duration_ms=exit_.duration_ms,
        signal=exit_.signal,
        timed_out=exit_.timed_out,
        network_note=exit_.network_note,
        stdout_bytes=out.total,
        stderr_bytes=err.total,
        truncated=out.truncated or err.truncated,
    )


async def _follow(
    ctx: Ctx, pump: asyncio.Task[None], out: Tail, err: Tail, timeout_s: float | None
) -> None:
    """Wait for the command, reporting progress as it goes; a quick one reports nothing."""
    started = time.monotonic()
    reported_at = started
    seen = 0
    while True:
        done, _ = await asyncio.wait({pump}, timeout=PROGRESS_EVERY)
        if done:
            return
        now = time.monotonic()
        grown = out.total + err.total != seen
        if grown or now - reported_at >= HEARTBEAT:
            seen = out.total + err.total
            reported_at = now
            await _report(ctx, started, out, err, timeout_s)
