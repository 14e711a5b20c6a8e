"""grove service start|ls|status|logs|stop: supervised processes with readiness and logs."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from engine.cli import secret_opts
from engine.cli.context import Context
from engine.cli.exec_cmds import command_argv
from engine.cli.output import age, emit_json, table
from engine.cli.sandbox_cmds import parse_pairs
from engine.client import LogLine, Probe, Service
from engine.errors import invalid

PROBES = ("file", "tcp", "http", "command")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_publish(text: str) -> tuple[int, int]:
    """[HOST_PORT:]GUEST_PORT as (guest port, host port); host port 0 picks a free one."""
    host, sep, guest = text.rpartition(":")
    valid = guest.isdigit() and (not sep or host.isdigit())
    if not valid or not 0 < int(guest) < 65536 or (sep and not 0 < int(host) < 65536):
        raise invalid(f"invalid --publish '{text}'", "use [HOST_PORT:]GUEST_PORT, e.g. 8080:80")
    return int(guest), int(host) if sep else 0


def parse_since(text: str, now: float | None = None) -> float:
    """10s / 5m / 2h / 1d ago, an ISO 8601 time (local unless it has an offset), or epoch."""
    now = time.time() if now is None else now
    text = text.strip()
    match = _RELATIVE.match(text)
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise invalid(
            f"invalid --since '{text}'", "use e.g. 10m, 2h, 2024-05-01T12:00:00 or unix seconds"
        ) from None


def _ports(info: Service) -> str:
    return ", ".join(f"{p.host}:{p.host_port}->{p.guest_port}" for p in info.published_ports)


def start(ctx: Context) -> int:
    a = ctx.args
    argv = command_argv(ctx)
    probe = None
    for kind in PROBES:
        target = getattr(a, f"ready_{kind}")
        if target is not None:
            if not target:
                raise invalid(f"empty --ready-{kind}", f"pass a value to --ready-{kind}")
            probe = Probe(kind=kind, target=target)
    if a.ready_timeout_seconds is not None and a.ready_timeout_seconds <= 0:
        raise invalid(
            f"invalid --ready-timeout-seconds {a.ready_timeout_seconds:g}",
            "pass a positive number of seconds",
        )
    if a.ready_interval_ms is not None and a.ready_interval_ms <= 0:
        raise invalid(f"invalid --ready-interval-ms {a.ready_interval_ms}", "pass 10 or more")
    secret_env = secret_opts.call_env(a)  # before ctx.client: bad input starts no engine
    info = ctx.client.service_start(
        a.id,
        a.name,
        argv,
        cwd=a.cwd or "",
        env=parse_pairs(a.env, "--env"),
        probe=probe,
        ready_timeout_s=a.ready_timeout_seconds or 0,
        ready_interval_ms=a.ready_interval_ms or 0,
        restart=a.restart,
        publish=[parse_publish(p) for p in a.publish or []],
        secret_env=secret_env,
    )
    if ctx.json:
        emit_json(info.to_json())
        return 0
    how = f"ready in {info.ready_ms or 0:.0f} ms" if info.probe else "started"
    print(f"{info.name} {info.state} ({how}), pid {info.pid}")
    for p in info.published_ports:
        print(f"  guest port {p.guest_port} published on http://{p.host}:{p.host_port}/")
    return 0


def stop(ctx: Context) -> int:
    info = ctx.client.service_stop(ctx.args.id, ctx.args.name)
    if ctx.json:
        emit_json(info.to_json())
    else:
        print(f"{info.name} {info.state}")
    return 0


def status(ctx: Context) -> int:
    info = ctx.client.service_status(ctx.args.id, ctx.args.name)
    if ctx.json:
        emit_json(info.to_json())
        return 0
    rows = [
        ("name", info.name),
        ("state", info.state),
        ("ready", "yes" if info.ready else "no"),
        ("pid", str(info.pid or "-")),
        ("command", " ".join(info.argv)),
        ("probe", info.probe or "-"),
        ("restart", f"{info.restart} ({info.restarts} restarts)"),
        ("ports", _ports(info) or "-"),
        ("up", age(info.started_at) if info.started_at and info.pid else "-"),
        ("ready in", f"{info.ready_ms:.0f} ms" if info.probe and info.ready_ms else "-"),
        ("last exit", _exit_text(info)),
        ("error", info.error or "-"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _exit_text(info: Service) -> str:
    if info.exit_code is not None:
        return f"code {info.exit_code}"
    return f"signal {info.signal}" if info.signal else "-"


def ls(ctx: Context) -> int:
    services = ctx.client.services(ctx.args.id)
    if ctx.json:
        emit_json([s.to_json() for s in services])
        return 0
    if not services:
        print(f"no services; start one with 'grove service start {ctx.args.id} NAME -- CMD'")
        return 0
    now = time.time()
    rows = [
        [s.name, s.state, "yes" if s.ready else "no", str(s.pid or "-"), str(s.restarts),
         age(s.started_at, now) if s.pid and s.started_at else "-", _ports(s) or "-"]
        for s in services
    ]  # fmt: skip
    print(table(["NAME", "STATE", "READY", "PID", "RESTARTS", "UP", "PORTS"], rows))
    return 0


def logs(ctx: Context) -> int:
    a = ctx.args
    if a.tail is not None and a.tail <= 0:
        raise invalid(f"invalid --tail {a.tail}", "pass a positive number of lines")
    if a.tail is not None and a.all:
        raise invalid("--tail and --all exclude each other", "pass one of them")
    since = parse_since(a.since) if a.since else 0
    last: list[float] = []  # the newest line's time: a reopened follow goes on from there

    def open_logs() -> Iterator[list[LogLine]]:
        if last:
            return ctx.client.service_logs(a.id, a.name, all=True, follow=True,
                                           since=last[0] + 1e-6)  # fmt: skip
        return ctx.client.service_logs(a.id, a.name, tail=a.tail or 0, all=a.all,
                                       follow=a.follow, since=since)  # fmt: skip

    collected: list[dict[str, Any]] = []
    for batch in ctx.across_drops(open_logs) if a.follow else open_logs():
        if batch:
            last[:] = [batch[-1].ts]
        lines = [line.to_json() for line in batch]
        if ctx.json:
            if a.follow:  # one JSON object per batch, as they come
                print(json.dumps({"lines": lines}), flush=True)
            else:
                collected += lines
            continue
        out = sys.stdout
        for line in lines:
            stamp = dt.datetime.fromtimestamp(line["ts"]).isoformat(timespec="milliseconds")
            out.write(f"{stamp} {line['stream']:<6} | {line['text']}\n")
        out.flush()
    if ctx.json and not a.follow:
        emit_json({"lines": collected})
    return 0


def register(verbs: Any, verb: Callable[..., argparse.ArgumentParser]) -> None:
    svc = verbs.add_parser("service", help="supervised services with readiness and logs")
    sub = svc.add_subparsers(dest="sub", metavar="ACTION", parser_class=type(svc), required=True)

    p = verb(sub, "start", start, "start a service; returns once it is ready: "
             "start ID NAME [options] -- CMD...")  # fmt: skip
    p.add_argument("id", help="sandbox id or name")
    p.add_argument("name", help="service name (lowercase letters, digits, . _ -)")
    p.add_argument("--cwd", help="working directory in the guest")
    p.add_argument("--env", action="append", metavar="K=V", help="environment variable (repeat)")
    secret_opts.add_call_option(p)
    ready = p.add_mutually_exclusive_group()
    ready.add_argument("--ready-file", metavar="PATH", help="ready once this guest file exists")
    ready.add_argument("--ready-tcp", metavar="HOST:PORT", help="ready once it accepts TCP")
    ready.add_argument("--ready-http", metavar="URL", help="ready once it answers 2xx/3xx")
    ready.add_argument("--ready-command", metavar="CMD", help="ready once CMD exits 0 (sh -c)")
    p.add_argument("--ready-timeout-seconds", type=float, metavar="S", help="default 30")
    p.add_argument("--ready-interval-ms", type=int, metavar="MS", help="probe period, default 100")
    p.add_argument("--restart", choices=("no", "on-failure"), default="no",
                   help="restart after a failing exit (default no)")  # fmt: skip
    p.add_argument(
        "--publish",
        action="append",
        metavar="[HOST_PORT:]GUEST_PORT",
        help="reach a guest TCP port on 127.0.0.1 (the service must listen on 0.0.0.0)",
    )

    p = verb(sub, "ls", ls, "list a sandbox's services", ("list",))
    p.add_argument("id", help="sandbox id or name")

    for name, handler, help_ in (
        ("status", status, "one service's state, readiness, ports and last exit"),
        ("stop", stop, "stop a service (TERM, then KILL after 5 s)"),
    ):
        p = verb(sub, name, handler, help_)
        p.add_argument("id", help="sandbox id or name")
        p.add_argument("name", help="service name")

    p = verb(sub, "logs", logs, "a service's output, timestamped per stream (kept on the host)")
    p.add_argument("id", help="sandbox id or name (terminated ones too)")
    p.add_argument("name", help="service name")
    p.add_argument("--tail", type=int, metavar="N", help="last N lines (default 100)")
    p.add_argument("--all", action="store_true", help="every kept line")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("--since", metavar="T", help="from T: 10m, 2h, an ISO time or unix seconds")
