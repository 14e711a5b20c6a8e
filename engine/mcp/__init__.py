"""grove mcp serve: Grove's sandboxes as MCP tools for agents, over stdio.

Layout: server (the FastMCP server, its error boundary and the stdio run), link (the lazily
connected engine client), registry (the tool table), profiles (which tools each profile
serves), errors (failures as isError results), results (the MCP-only result shapes), tools/
(the tool functions, by concept). Only the typed client (AsyncGrove) is used, never protobuf.

This module stays import-light: the CLI reads PROFILES without loading the mcp package.
"""

from __future__ import annotations

from typing import Literal

Profile = Literal["core", "full"]
#: core: create, exec, files, fork, terminate, list; full adds everything else.
PROFILES: tuple[Profile, ...] = ("core", "full")
