"""The engine an MCP server drives: connected on the first tool call, not at start-up.

Connecting lazily lets a client list the tools (and a bad engine be reported as a tool error
with its remedy, not as a server that never starts). A call that finds the engine gone drops
the connection, so the next one connects again (starting a local engine on demand).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from engine.client import AsyncGrove
from engine.client.hosts import SshTarget
from engine.config import Paths
from engine.errors import GroveError

log = logging.getLogger("grove.mcp")


def _report(state: str, detail: str) -> None:
    """A remote connection's drop and return, on stderr (stdout is the MCP channel)."""
    log.warning("%s", detail)


class EngineLink:
    def __init__(self, host: SshTarget | None, paths: Paths) -> None:
        self.host = host
        self.paths = paths
        self._client: AsyncGrove | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> AsyncGrove:
        async with self._lock:
            if self._client is None:
                self._client = await AsyncGrove.connect(
                    paths=self.paths, host=self.host, on_state=_report
                )
            return self._client

    async def drop(self) -> None:
        async with self._lock:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(GroveError, OSError):
                await client.close()

    async def close(self) -> None:
        await self.drop()
