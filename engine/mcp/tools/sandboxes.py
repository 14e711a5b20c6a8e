"""Sandboxes: create, list, fork, terminate (core)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from engine.client import models as m
from engine.errors import invalid
from engine.mcp.registry import Ctx, engine, tool
from engine.mcp.results import SandboxList
from engine.mcp.tools.common import Network, SandboxRef, TtlSeconds
from engine.secrets import spec


@tool("core", "Create a sandbox")
async def sandbox_create(
    ctx: Ctx,
    environment: Annotated[
        str, Field(description="the environment (guest image) to start from, e.g. debian:12")
    ] = "debian:12",
    name: Annotated[str | None, Field(description="a name (default: its id)")] = None,
    vcpus: Annotated[int | None, Field(ge=1, description="virtual CPUs (default 1)")] = None,
    mem_mib: Annotated[
        int | None, Field(ge=1, description="guest memory in MiB (default 512)")
    ] = None,
    network: Network = None,
    secrets: Annotated[
        dict[str, str] | None,
        Field(
            description="secrets it holds, NAME -> value; a command sees one only when its "
            "call asks for it (secret_env), and values are redacted from outputs"
        ),
    ] = None,
    from_snapshot: Annotated[
        str | None, Field(description="a named snapshot to restore instead of the environment")
    ] = None,
    ttl_s: TtlSeconds = None,
) -> m.Sandbox:
    """Create a running microVM sandbox (a copy-on-write restore: well under a second on KVM)
    and return it; pass its id to the other tools."""
    values = spec.validate_values(secrets or {})  # before anything connects or is made
    client = await engine(ctx)
    return await client.create(
        environment="" if from_snapshot else environment,
        name=name or "",
        vcpus=vcpus or 0,
        mem_mib=mem_mib or 0,
        secrets=values,
        from_snapshot=from_snapshot or "",
        network=network or "",
        ttl_s=ttl_s,
    )


@tool("core", "List sandboxes", read_only=True, idempotent=True)
async def sandbox_list(
    ctx: Ctx,
    all: Annotated[bool, Field(description="include terminated sandboxes")] = False,
) -> SandboxList:
    """The engine's sandboxes with their phase, size, network policy and lineage."""
    client = await engine(ctx)
    return SandboxList(sandboxes=await client.sandboxes(all=all))


@tool("core", "Terminate a sandbox", destructive=True, idempotent=True)
async def sandbox_terminate(ctx: Ctx, sandbox: SandboxRef) -> m.Sandbox:
    """Destroy a sandbox: its VM, memory and disk. Its forks are not affected."""
    client = await engine(ctx)
    return await client.terminate(sandbox)


@tool("core", "Fork a sandbox")
async def sandbox_fork(
    ctx: Ctx,
    sandbox: SandboxRef,
    replicas: Annotated[int, Field(ge=1, description="how many children")] = 1,
    name_prefix: Annotated[
        str | None, Field(description="children are named PREFIX-1, PREFIX-2, ...")
    ] = None,
    allow_secrets: Annotated[
        bool, Field(description="required to fork a sandbox that holds secrets")
    ] = False,
    network: Annotated[
        str | None, Field(description="the children's network policy (default: the source's)")
    ] = None,
    memory: Annotated[
        Literal["auto", "delta", "full"],
        Field(description="memory layout of the children; auto: the engine picks the cheaper"),
    ] = "auto",
    ttl_s: TtlSeconds = None,
) -> m.ForkResult:
    """Snapshot-fork a running sandbox into children that start from its exact memory and
    disk (processes, files); the source pauses briefly and goes on. Returns the children."""
    client = await engine(ctx)
    limits = client.info.limits if client.info is not None else None
    if limits is not None and replicas > limits.max_fork_replicas:
        raise invalid(
            f"replicas {replicas} is over this engine's limit of {limits.max_fork_replicas}",
            f"pass replicas from 1 to {limits.max_fork_replicas}",
        )
    return await client.fork(
        sandbox,
        replicas=replicas,
        name_prefix=name_prefix or "",
        allow_secrets=allow_secrets,
        network=network or "",
        memory="" if memory == "auto" else memory,
        ttl_s=ttl_s,
    )
