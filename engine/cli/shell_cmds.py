"""grove shell: attach this terminal to a guest shell, or drive shells from scripts.

``grove shell ID [SHELL]`` attaches (opening a new shell unless SHELL names one); the verbs
``open``, ``read``, ``write``, ``signal``, ``close`` and ``ls`` are for scripts.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from engine.cli import secret_opts, terminal
from engine.cli.context import Context
from engine.cli.output import age, emit_json, table
from engine.errors import invalid

VERBS = ("attach", "open", "read", "write", "signal", "close", "ls", "list")
SIGNALS = ("INT", "TERM", "HUP", "KILL", "QUIT")
MAX_DIM = 9999


def _size(value: int | None, what: str) -> int:
    if value is None:
        return 0
    if not 0 < value <= MAX_DIM:
        raise invalid(f"invalid --{what} {value}", f"pass --{what} between 1 and {MAX_DIM}")
    return value


def attach(ctx: Context) -> int:
    a = ctx.args
    secret_env = secret_opts.call_env(a)
    if a.shell_id and (a.cwd or a.shell or secret_env):
        raise invalid(
            "--cwd, --shell and --secret-env apply to a new shell", "drop them to attach to SHELL"
        )
    outcome = terminal.attach(ctx.client, a.id, shell_id=a.shell_id or "", cwd=a.cwd or "",
                              shell=a.shell or "", no_replay=a.no_replay,
                              secret_env=secret_env)  # fmt: skip
    if outcome.error is not None:
        raise outcome.error
    sid, shell_id = outcome.sandbox_id, outcome.shell_id
    if outcome.exit is not None:
        ex = outcome.exit
        if ex.exit_code is not None:
            code = ex.exit_code
        elif ex.signal:
            code = 128 + int(getattr(signal, "SIG" + ex.signal, signal.SIGKILL))
        else:
            code = 1
        how = f"exit code {code}" if not ex.signal else f"signal {ex.signal}"
        if ex.state == "lost":
            how = "the sandbox stopped"
        print(f"\ngrove: shell {shell_id} ended ({how})", file=sys.stderr)
        return code
    print(
        f"\ngrove: detached; shell {shell_id} keeps running."
        f" Reattach with 'grove shell {sid} {shell_id}'",
        file=sys.stderr,
    )
    return 0


def open_(ctx: Context) -> int:
    a = ctx.args
    secret_env = secret_opts.call_env(a)  # before ctx.client: bad input starts no engine
    info = ctx.client.shell_open(
        a.id,
        cols=_size(a.cols, "cols"),
        rows=_size(a.rows, "rows"),
        cwd=a.cwd or "",
        shell=a.shell or "",
        secret_env=secret_env,
    )
    if ctx.json:
        emit_json({"shell_id": info.shell_id, "state": info.state, "cols": info.cols,
                   "rows": info.rows})  # fmt: skip
    else:
        print(info.shell_id)
    return 0


def read(ctx: Context) -> int:
    a = ctx.args
    if a.cursor < 0:
        raise invalid(f"invalid --cursor {a.cursor}", "pass 0 or a next_cursor from a read")
    if a.max_chars is not None and a.max_chars <= 0:
        raise invalid(f"invalid --max-chars {a.max_chars}", "pass a positive number")
    if a.wait_ms < 0:
        raise invalid(f"invalid --wait-ms {a.wait_ms}", "pass 0 or more milliseconds")
    reply = ctx.client.shell_read(
        a.id, a.shell_id, cursor=a.cursor, max_chars=a.max_chars or 0, wait_ms=a.wait_ms
    )
    if ctx.json:
        emit_json(reply.to_json())
    else:
        sys.stdout.write(reply.output)
        sys.stdout.flush()
        print(f"grove: next cursor {reply.next_cursor} ({reply.state})", file=sys.stderr)
    return 0


def write(ctx: Context) -> int:
    a = ctx.args
    data = a.input if a.no_newline else a.input + "\n"
    if not data:
        raise invalid("nothing to write", "pass --input TEXT (without --no-newline for Enter)")
    encoded = data.encode("utf-8")
    info = ctx.client.shell_write(a.id, a.shell_id, encoded)
    if ctx.json:
        emit_json({**info.to_json(), "written": len(encoded)})
    return 0


def signal_(ctx: Context) -> int:
    a = ctx.args
    name = a.signal.upper().removeprefix("SIG")
    if name not in SIGNALS:
        raise invalid(f"unsupported signal '{a.signal}'", f"use one of {', '.join(SIGNALS)}")
    info = ctx.client.shell_signal(a.id, a.shell_id, name)
    if ctx.json:
        emit_json(info.to_json())
    return 0


def close(ctx: Context) -> int:
    a = ctx.args
    info = ctx.client.shell_close(a.id, a.shell_id)
    if ctx.json:
        emit_json(info.to_json())
    else:
        print(f"{info.shell_id} closed")
    return 0


def ls(ctx: Context) -> int:
    shells = ctx.client.shells(ctx.args.id)
    if ctx.json:
        emit_json([s.to_json() for s in shells])
        return 0
    if not shells:
        print(f"no shells; open one with 'grove shell {ctx.args.id}'")
        return 0
    now = time.time()
    rows = [
        [s.shell_id, s.state, str(s.pid or "-"), f"{s.cols}x{s.rows}", str(s.viewers),
         age(s.created_at, now), " ".join(s.argv)]
        for s in shells
    ]  # fmt: skip
    print(table(["SHELL", "STATE", "PID", "SIZE", "ATTACHED", "AGE", "COMMAND"], rows))
    return 0


# -- parser ----------------------------------------------------------------------------------


def _attach_by_default(parser: argparse.ArgumentParser) -> None:
    """`grove shell ID` means `grove shell attach ID`: insert the verb when none is given."""
    base = type(parser)

    class ShellParser(base):  # type: ignore[valid-type, misc]
        def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
            args = list(args or [])
            if args and not args[0].startswith("-") and args[0] not in VERBS:
                args.insert(0, "attach")
            return super().parse_known_args(args, namespace)

    parser.__class__ = ShellParser


def register(verbs: Any, verb: Callable[..., argparse.ArgumentParser]) -> None:
    shell = verbs.add_parser(
        "shell",
        help="interactive shells: grove shell ID [SHELL]",
        description="Attach this terminal to a shell in a sandbox (grove shell ID [SHELL]), "
        f"or drive shells from scripts. Detach with {terminal.DETACH_HELP}.",
    )
    base = type(shell)
    _attach_by_default(shell)
    sub = shell.add_subparsers(dest="sub", metavar="ACTION", parser_class=base, required=True)
    p = verb(sub, "attach", attach, "attach this terminal to a new shell, or to SHELL")
    p.add_argument("id", help="sandbox id or name")
    p.add_argument("shell_id", nargs="?", metavar="SHELL", help="an open shell to reattach")
    p.add_argument("--cwd", help="working directory of a new shell")
    p.add_argument("--shell", metavar="CMD", help="shell command (default: bash, else sh)")
    p.add_argument("--no-replay", action="store_true", help="do not replay the scrollback")
    secret_opts.add_call_option(p)

    p = verb(sub, "open", open_, "open a shell for scripts; prints its id")
    p.add_argument("id", help="sandbox id or name")
    p.add_argument("--cols", type=int, help="terminal width (default 80)")
    p.add_argument("--rows", type=int, help="terminal height (default 24)")
    p.add_argument("--cwd", help="working directory")
    p.add_argument("--shell", metavar="CMD", help="shell command (default: bash, else sh)")
    secret_opts.add_call_option(p)

    p = verb(sub, "read", read, "print a shell's output from a cursor")
    p.add_argument("id", help="sandbox id or name")
    p.add_argument("shell_id", metavar="SHELL")
    p.add_argument("--cursor", type=int, default=0, help="byte offset (next_cursor of a read)")
    p.add_argument("--max-chars", type=int, help="at most this many characters (default 65536)")
    p.add_argument("--wait-ms", type=int, default=0, help="wait this long for new output")

    p = verb(sub, "write", write, "type text into a shell (Enter added unless --no-newline)")
    p.add_argument("id", help="sandbox id or name")
    p.add_argument("shell_id", metavar="SHELL")
    p.add_argument("--input", required=True, metavar="TEXT")
    p.add_argument("--no-newline", action="store_true", help="do not press Enter after it")

    p = verb(sub, "signal", signal_, "signal a shell's foreground job, as Ctrl+C would")
    p.add_argument("id", help="sandbox id or name")
    p.add_argument("shell_id", metavar="SHELL")
    p.add_argument("--signal", required=True, metavar="|".join(SIGNALS))

    p = verb(sub, "close", close, "end a shell (HUP, then KILL)")
    p.add_argument("id", help="sandbox id or name")
    p.add_argument("shell_id", metavar="SHELL")

    p = verb(sub, "ls", ls, "list a sandbox's shells", ("list",))
    p.add_argument("id", help="sandbox id or name")
