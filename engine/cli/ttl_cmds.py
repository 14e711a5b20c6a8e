"""--ttl on create, run and fork, and grove sandbox ttl: when the engine terminates a sandbox."""

from __future__ import annotations

import argparse
import time
from typing import Any

from engine.cli.context import Context
from engine.cli.output import emit_json
from engine.client import Sandbox
from engine.errors import GroveError, invalid
from engine.sandbox import ttl

CREATE_HELP = "terminate it after DURATION: 90s, 10m, 2h, 1h30m (0: never; default: the engine's)"
FORK_HELP = "the children's TTL: 90s, 10m, 2h, 1h30m (0: never; default: the engine's)"


def add_option(p: argparse.ArgumentParser, help_: str = CREATE_HELP) -> None:
    p.add_argument("--ttl", metavar="DURATION", help=help_)


def ttl_arg(text: str | None) -> float | None:
    """A --ttl value checked here, so a bad one fails before any engine call; None (not
    given) leaves it to the engine's default, 0 is no limit."""
    if text is None:
        return None
    return _parsed(text, allow_zero=True)


def _parsed(text: str, allow_zero: bool) -> float:
    try:
        return ttl.parse(text, allow_zero=allow_zero)
    except GroveError as exc:
        raise GroveError(exc.code, f"--ttl: {exc.message}" if allow_zero else exc.message,
                         exc.remedy) from None  # fmt: skip


def register(sandbox: argparse._SubParsersAction[Any], verb: Any) -> None:
    p = verb(sandbox, "ttl", set_ttl, "set or clear when a sandbox expires (is terminated)")
    p.add_argument("id")
    p.add_argument("duration", nargs="?", help="from now: 90s, 10m, 2h, 1h30m")
    p.add_argument("--clear", action="store_true", help="no limit: it never expires")


def set_ttl(ctx: Context) -> int:
    a = ctx.args
    if a.clear == (a.duration is not None):
        raise invalid(
            "pass exactly one of DURATION or --clear",
            "e.g. 'grove sandbox ttl ID 30m', or 'grove sandbox ttl ID --clear'",
        )
    seconds = None
    if not a.clear:
        if a.duration.strip() in ("0", "0s"):
            raise invalid("a TTL of 0 would expire it now", "use --clear for no limit")
        seconds = _parsed(a.duration, allow_zero=False)  # before ctx.client: no engine call
    sandbox = ctx.client.set_ttl(a.id, seconds)
    if ctx.json:
        emit_json(sandbox.to_json())
    else:
        print(describe(sandbox))
    return 0


def describe(sandbox: Sandbox, now: float | None = None) -> str:
    if sandbox.expires_at is None:
        return f"{sandbox.id} never expires"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sandbox.expires_at))
    left = ttl.remaining(sandbox.expires_at, now or time.time())
    return f"{sandbox.id} expires in {left} (at {stamp})"
