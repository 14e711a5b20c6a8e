"""grove host add|ls|rm|use: named remote engines (ssh:// URLs) in the user's config."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from engine.cli.context import Context
from engine.cli.output import emit_json, table
from engine.client.hosts import HostBook, config_file, parse_url


def add(ctx: Context) -> int:
    book = HostBook.load()
    book.add(ctx.args.name, ctx.args.url)
    book.save()
    if ctx.json:
        emit_json({"name": ctx.args.name, "url": ctx.args.url})
    else:
        print(f"{ctx.args.name} -> {ctx.args.url} (use it with --host {ctx.args.name})")
    return 0


def ls(ctx: Context) -> int:
    book = HostBook.load()
    if ctx.json:
        emit_json([{"name": n, "url": u, "current": n == book.current}
                   for n, u in sorted(book.hosts.items())])  # fmt: skip
        return 0
    if not book.hosts:
        print("no hosts; add one with 'grove host add NAME ssh://USER@HOST'")
        return 0
    rows = [["*" if n == book.current else "", n, u] for n, u in sorted(book.hosts.items())]
    print(table(["", "NAME", "URL"], rows))
    return 0


def rm(ctx: Context) -> int:
    book = HostBook.load()
    book.remove(ctx.args.name)
    book.save()
    print(f"{ctx.args.name} removed") if not ctx.json else emit_json({"removed": ctx.args.name})
    return 0


def use(ctx: Context) -> int:
    book = HostBook.load()
    name = None if ctx.args.name == "local" else ctx.args.name
    book.use(name)
    book.save()
    if ctx.json:
        emit_json({"current": name})
    else:
        where = f"{name} ({parse_url(book.hosts[name]).label})" if name else "the local engine"
        print(f"commands now talk to {where}; settings in {config_file()}")
    return 0


def register(verbs: Any, verb: Callable[..., argparse.ArgumentParser]) -> None:
    hosts = verbs.add_parser("host", help="named remote engines reached over SSH")
    sub = hosts.add_subparsers(dest="sub", metavar="ACTION", parser_class=type(hosts),
                               required=True)  # fmt: skip
    p = verb(sub, "add", add, "name a remote engine: add NAME ssh://USER@HOST[:PORT][/SOCKET]")
    p.add_argument("name")
    p.add_argument("url")
    verb(sub, "ls", ls, "the named hosts (* marks the one in use)", ("list",))
    p = verb(sub, "rm", rm, "forget a named host")
    p.add_argument("name")
    p = verb(sub, "use", use, "talk to this host by default ('local' for this one)")
    p.add_argument("name")
