"""Supervised services in a sandbox: start (with a readiness probe), stop, status, list, logs
(full)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from engine.client import Probe
from engine.client import models as m
from engine.errors import invalid
from engine.mcp.registry import Ctx, engine, tool
from engine.mcp.results import ServiceList, ServiceLog
from engine.mcp.tools.common import Cwd, Env, SandboxRef, SecretEnv, command_argv

ServiceName = Annotated[str, Field(min_length=1, max_length=64, description="service name")]


@tool("full", "Start a service")
async def service_start(
    ctx: Ctx,
    sandbox: SandboxRef,
    name: ServiceName,
    argv: Annotated[
        list[str] | None, Field(description="the command as an argument vector")
    ] = None,
    command: Annotated[str | None, Field(description="or a shell command line (sh -c)")] = None,
    cwd: Cwd = None,
    env: Env = None,
    ready: Annotated[
        Literal["file", "tcp", "http", "command"] | None,
        Field(
            description="readiness probe: a file appears, a TCP port accepts, an HTTP URL "
            "answers 2xx/3xx, or a command exits 0"
        ),
    ] = None,
    ready_target: Annotated[
        str | None,
        Field(description="the probe's PATH, HOST:PORT, URL or command line"),
    ] = None,
    ready_timeout_s: Annotated[
        float | None, Field(gt=0, description="give up on readiness after this long")
    ] = None,
    restart: Annotated[
        Literal["no", "on-failure"], Field(description="restart it when it fails")
    ] = "no",
    publish: Annotated[
        list[int] | None,
        Field(description="guest ports to publish on free ports of 127.0.0.1 on the host"),
    ] = None,
    secret_env: SecretEnv = None,
) -> m.Service:
    """Start a supervised process; returns once its probe passes (or at once without one).
    A probe that fails stops it and the error carries its last output."""
    run = command_argv(argv, command)
    if (ready is None) != (ready_target is None):
        raise invalid("ready and ready_target go together", "pass both, or neither")
    probe = Probe(kind=ready, target=ready_target) if ready and ready_target else None
    client = await engine(ctx)
    return await client.service_start(
        sandbox, name, run, cwd=cwd or "", env=env, probe=probe,
        ready_timeout_s=ready_timeout_s or 0, restart=restart,
        publish=[(port, 0) for port in publish or ()], secret_env=list(secret_env or ()),
    )  # fmt: skip


@tool("full", "Stop a service", destructive=True, idempotent=True)
async def service_stop(ctx: Ctx, sandbox: SandboxRef, name: ServiceName) -> m.Service:
    """Stop a service: TERM, then KILL after 5 s. Its logs are kept."""
    client = await engine(ctx)
    return await client.service_stop(sandbox, name)


@tool("full", "A service's state", read_only=True, idempotent=True)
async def service_status(ctx: Ctx, sandbox: SandboxRef, name: ServiceName) -> m.Service:
    """A service's state (starting, running, backoff, exited, failed, stopped), pid,
    readiness, restarts and published ports."""
    client = await engine(ctx)
    return await client.service_status(sandbox, name)


@tool("full", "List services", read_only=True, idempotent=True)
async def service_list(ctx: Ctx, sandbox: SandboxRef) -> ServiceList:
    """Every service of a sandbox and its state."""
    client = await engine(ctx)
    return ServiceList(services=await client.services(sandbox))


@tool("full", "A service's log", read_only=True, idempotent=True)
async def service_logs(
    ctx: Ctx,
    sandbox: SandboxRef,
    name: ServiceName,
    tail: Annotated[int, Field(ge=1, le=10000, description="the last this many lines")] = 100,
) -> ServiceLog:
    """A service's stdout and stderr lines, timestamped, oldest first."""
    client = await engine(ctx)
    lines: list[m.LogLine] = []
    async for batch in client.service_logs(sandbox, name, tail=tail):
        lines.extend(batch)
    return ServiceLog(sandbox=sandbox, service=name, lines=lines[-tail:])
