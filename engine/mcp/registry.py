"""The tool table: every MCP tool, the profile that brings it in, and its hints to clients."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mcp.server.fastmcp import Context
from mcp.server.session import ServerSession
from mcp.types import ToolAnnotations

from engine.client import AsyncGrove
from engine.mcp import Profile
from engine.mcp.link import EngineLink

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

#: What every tool function gets as its `ctx` argument (FastMCP injects it, and leaves it out
#: of the input schema): the request, its session (for progress) and the engine link.
Ctx = Context[ServerSession, EngineLink, Any]


@dataclass(frozen=True)
class ToolDef:
    name: str
    fn: Callable[..., Awaitable[Any]]
    profile: Profile
    annotations: ToolAnnotations


TOOLS: dict[str, ToolDef] = {}


def tool(
    profile: Profile,
    title: str,
    *,
    read_only: bool = False,
    destructive: bool = False,
    idempotent: bool = False,
) -> Callable[[F], F]:
    """Register an async tool function under its own name; its docstring is its description."""

    def register(fn: F) -> F:
        if fn.__name__ in TOOLS:
            raise ValueError(f"MCP tool {fn.__name__} registered twice")
        hints = ToolAnnotations(
            title=title,
            readOnlyHint=read_only,
            destructiveHint=destructive,
            idempotentHint=idempotent,
            # The tools act on this engine's sandboxes only, never on the open world.
            openWorldHint=False,
        )
        TOOLS[fn.__name__] = ToolDef(fn.__name__, fn, profile, hints)
        return fn

    return register


async def engine(ctx: Ctx) -> AsyncGrove:
    """The engine client of this server, connected on first use."""
    link: EngineLink = ctx.request_context.lifespan_context
    return await link.client()
