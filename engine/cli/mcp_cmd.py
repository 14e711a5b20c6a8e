"""grove mcp serve: Grove's tools for an MCP client (an agent), over stdin/stdout."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from engine.cli.context import Context
from engine.mcp import PROFILES


def serve(ctx: Context) -> int:
    # Imported here: the mcp package is heavy and only this verb needs it.
    from engine.mcp import server

    target = ctx.target  # a bad --host fails now, before the client is told we serve
    server.serve(ctx.args.profile, target, ctx.paths)
    return 0


def register(verbs: argparse._SubParsersAction[Any], verb: Callable[..., Any]) -> None:
    parent = verbs.add_parser("mcp", help="serve Grove to MCP clients (agents)")
    # The root's parser class (usage errors as cause + remedy) for the subcommands too.
    sub = parent.add_subparsers(dest="sub", metavar="ACTION", parser_class=type(parent),
                                required=True)  # fmt: skip
    p = verb(sub, "serve", serve, "serve Grove's tools over stdio to an MCP client")
    p.add_argument(
        "--profile",
        choices=PROFILES,
        default="core",
        help="core: create, exec, file read/write, fork, terminate, list; full: also "
        "snapshots, reset, diff, trees, services, shells, top, TTL",
    )
