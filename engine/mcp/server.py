"""The MCP server: FastMCP with Grove's tools of one profile, an error boundary, and stdio.

Every tool call passes through GroveMCP.call_tool: whatever fails comes back as an isError
result with {code, message, remedy} (errors.py). Nothing logs a call's arguments: the mcp
package logs whole requests at DEBUG, and sandbox_create's carry secret values, so its loggers
are held at WARNING.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.fastmcp import FastMCP

from engine.client.hosts import SshTarget
from engine.config import Paths
from engine.mcp import errors
from engine.mcp.link import EngineLink
from engine.mcp.profiles import tools_for

INSTRUCTIONS = """Grove runs Linux microVM sandboxes on this host's engine. Create one with
sandbox_create (it runs in well under a second), run commands with sandbox_exec, move files
with file_read / file_write, and fork a running sandbox with sandbox_fork to try several
things from the same state. Terminate what you no longer need. Failures are JSON
{code, message, remedy}: follow the remedy."""


class GroveMCP(FastMCP[EngineLink]):
    def __init__(self, link: EngineLink, profile: str) -> None:
        @asynccontextmanager
        async def lifespan(_app: FastMCP[EngineLink]) -> AsyncIterator[EngineLink]:
            try:
                yield link
            finally:
                await link.close()

        super().__init__(
            name="grove",
            instructions=INSTRUCTIONS,
            lifespan=lifespan,
            log_level="WARNING",
            warn_on_duplicate_tools=True,
        )
        self.link = link
        self.profile = profile
        for t in tools_for(profile):
            self.add_tool(t.fn, name=t.name, title=t.annotations.title,
                          annotations=t.annotations, structured_output=True)  # fmt: skip

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        try:
            return await super().call_tool(name, arguments)
        except Exception as exc:  # the boundary: every failure becomes a tool error
            error = errors.from_exception(exc, name, self.profile)
            if error.code == "engine_unreachable":
                await self.link.drop()  # the next call connects (and starts it) again
            return errors.result(error, errors.secret_values(arguments))


def quiet_logging() -> None:
    for name in ("mcp", "FastMCP"):
        logging.getLogger(name).setLevel(logging.WARNING)


def build(profile: str, host: SshTarget | None, paths: Paths) -> GroveMCP:
    server = GroveMCP(EngineLink(host, paths), profile)
    quiet_logging()
    return server


def serve(profile: str, host: SshTarget | None, paths: Paths) -> None:
    """Serve MCP on stdin/stdout until the client closes them."""
    build(profile, host, paths).run("stdio")
