"""grove ui: open the dashboard. Textual is imported only here, so other verbs stay light."""

from __future__ import annotations

import argparse

from engine.cli.context import Context


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--theme", help="colour theme: grove-dark (default), grove-light, projector")
    p.add_argument("--read-only", action="store_true", help="look, but change nothing")
    p.add_argument(
        "--demo",
        action="store_true",
        help="a scripted tour on real sandboxes: pull debian:12, a service, a family "
        "of forks, a shell",
    )


def ui(ctx: Context) -> int:
    from tui.app import GroveApp
    from tui.engine.grpc_gateway import GrpcGateway

    a = ctx.args
    target = ctx.target
    gateway = GrpcGateway(ctx.paths, host=target.url if target is not None else None)
    app = GroveApp(gateway, theme=a.theme, read_only=a.read_only, demo=a.demo)
    app.run()
    return 0
