"""grove ui: open the dashboard. Textual is imported only here, so other verbs stay light.

One engine (the local one, or --host / GROVE_HOST / `grove host use`), or a fleet: every
`--host` given (repeatable; `local` is this machine's engine) or `--all-hosts`.
"""

from __future__ import annotations

import argparse

from engine.cli.context import Context
from engine.client.hosts import HostBook, resolve
from engine.errors import GroveError

LOCAL = "local"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host",
        dest="ui_hosts",
        action="append",
        metavar="HOST",
        help="an engine to show: ssh://USER@HOST[:PORT][/SOCKET], a 'grove host' name, or "
        "'local'; repeat it for a fleet",
    )
    p.add_argument(
        "--all-hosts",
        action="store_true",
        help="show this machine's engine and every host named with 'grove host add'",
    )
    p.add_argument("--theme", help="colour theme: grove-dark (default), grove-light, projector")
    p.add_argument("--read-only", action="store_true", help="look, but change nothing")
    p.add_argument(
        "--demo",
        action="store_true",
        help="a scripted tour on real sandboxes (on the first host): pull debian:12, a service, "
        "a family of forks, a shell",
    )


def host_names(ctx: Context) -> list[str]:
    """The hosts asked for, in order, each once. Empty: the single default engine."""
    a = ctx.args
    asked = ([a.host] if getattr(a, "host", None) else []) + list(a.ui_hosts or [])
    if a.all_hosts:
        asked = [LOCAL, *sorted(HostBook.load().hosts), *asked]
    seen: list[str] = []
    for name in asked:
        name = name.strip()
        if not name:
            raise GroveError(
                "invalid_argument", "an empty --host", "pass an ssh:// URL, a host name or local"
            )
        if name not in seen:
            seen.append(name)
    return seen


def ui(ctx: Context) -> int:
    from tui.app import GroveApp
    from tui.engine.gateway import EngineGateway
    from tui.engine.grpc_gateway import GrpcGateway

    a = ctx.args
    gateways: dict[str, EngineGateway] = {}
    names = host_names(ctx)
    if not names:
        target = ctx.target
        name = target.label.removeprefix("ssh://") if target is not None else LOCAL
        gateways[name] = GrpcGateway(ctx.paths, host=target.url if target is not None else None)
    for given in names:
        target = resolve(given)  # an unknown name fails here, with the names there are
        if target is None:
            gateways[LOCAL] = GrpcGateway(ctx.paths)
            continue
        name = given if "://" not in given else target.label.removeprefix("ssh://")
        gateways[name] = GrpcGateway(ctx.paths, host=target.url)
    app = GroveApp(gateways, theme=a.theme, read_only=a.read_only, demo=a.demo)
    app.run()
    return app.return_code or 0
