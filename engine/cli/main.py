"""The grove command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from engine.cli import (
    doctor,
    engine_cmds,
    env_cmds,
    exec_cmds,
    file_cmds,
    fork_cmds,
    host_cmds,
    mcp_cmd,
    net_cmds,
    sandbox_cmds,
    secret_opts,
    service_cmds,
    shell_cmds,
    ttl_cmds,
)
from engine.cli.context import Context
from engine.cli.output import print_error
from engine.config import Paths
from engine.errors import GroveError

Handler = Callable[[Context], int]


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors follow the same cause + remedy shape as every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise GroveError("usage", message, f"see '{self.prog} --help'")


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


HOST_HELP = "the engine to talk to: ssh://USER@HOST[:PORT][/SOCKET] or a 'grove host' name"


def _exec_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=float, help="kill the command's process group after S seconds")
    p.add_argument("--env", action="append", metavar="K=V", help="environment variable (repeat)")
    p.add_argument("--cwd", help="working directory in the guest")
    p.add_argument("-i", "--interactive", action="store_true", help="forward stdin")
    secret_opts.add_call_option(p)


def _size_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", help="sandbox name (default: its id)")
    p.add_argument("--vcpus", type=int, help="virtual CPUs (default 1)")
    p.add_argument("--mem-mib", type=int, help="guest memory in MiB (default 512)")
    ttl_cmds.add_option(p)  # create (also --from-snapshot) and run


def build_parser() -> Parser:
    root = Parser(prog="grove", description="Local microVM sandboxes with snapshot-fork.")
    root.add_argument("--host", default=None, help=HOST_HELP)
    verbs = root.add_subparsers(dest="verb", metavar="COMMAND", parser_class=Parser)

    def verb(parent: argparse._SubParsersAction[Parser], name: str, handler: Handler,
             help_: str, aliases: tuple[str, ...] = (), host: bool = True) -> Parser:  # fmt: skip
        p = parent.add_parser(name, help=help_, description=help_, aliases=list(aliases))
        p.set_defaults(handler=handler)
        _json(p)
        if host:
            # Also after the verb; SUPPRESS keeps a root-level --host from being overwritten.
            p.add_argument("--host", default=argparse.SUPPRESS, help=HOST_HELP)
        return p

    eng = verbs.add_parser("engine", help="manage the engine daemon").add_subparsers(
        dest="sub", metavar="ACTION", parser_class=Parser, required=True
    )
    p = verb(eng, "start", engine_cmds.start, "start the engine daemon")
    p.add_argument("--foreground", action="store_true", help="run in this terminal")
    verb(eng, "stop", engine_cmds.stop, "stop the engine (running sandboxes are stopped)")
    verb(eng, "status", engine_cmds.status, "is the engine running, and on what")
    verb(eng, "dial-stdio", engine_cmds.dial_stdio,
         "bridge stdin/stdout to the engine socket (remote clients use it over SSH)")  # fmt: skip

    env = verbs.add_parser("env", help="environments (guest images)").add_subparsers(
        dest="sub", metavar="ACTION", parser_class=Parser, required=True
    )
    verb(env, "list", env_cmds.list_, "known environments and their cache state", ("ls",))
    p = verb(env, "pull", env_cmds.pull, "build an environment locally (cached)")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="rebuild even when cached")
    p.add_argument("--no-warm", action="store_true", help="skip booting its template")
    p = verb(env, "inspect", env_cmds.inspect, "details of one environment")
    p.add_argument("name")
    verb(env, "prune", env_cmds.prune, "remove cached layers and templates nothing uses")

    sbx = verbs.add_parser("sandbox", help="sandboxes").add_subparsers(
        dest="sub", metavar="ACTION", parser_class=Parser, required=True
    )
    p = verb(sbx, "create", sandbox_cmds.create, "create a sandbox; prints its id")
    p.add_argument("environment", nargs="?", default="")
    p.add_argument("--from-snapshot", metavar="NAME", help="restore a named snapshot instead")
    _size_opts(p)
    net_cmds.add_option(p)
    secret_opts.add_create_options(p)
    for parent in (sbx, verbs):
        name, aliases = ("ls", ("list",)) if parent is sbx else ("ps", ())
        p = verb(parent, name, sandbox_cmds.ls, "list sandboxes", aliases)
        p.add_argument("-a", "--all", action="store_true", help="include terminated ones")
    p = verb(sbx, "exec", exec_cmds.exec_, "run a command in a sandbox: exec ID -- CMD...")
    p.add_argument("id")
    _exec_opts(p)
    for name, handler, help_ in (
        ("stop", sandbox_cmds.stop, "stop a sandbox (its disk is kept)"),
        ("start", sandbox_cmds.start, "start a stopped sandbox (boots from its disk)"),
        ("ping", sandbox_cmds.ping, "measure the agent round trip"),
    ):
        verb(sbx, name, handler, help_).add_argument("id")
    p = verb(sbx, "terminate", sandbox_cmds.terminate, "destroy a sandbox and its files", ("rm",))
    p.add_argument("id", nargs="?")
    p.add_argument("--all", action="store_true", help="every sandbox")
    net_cmds.register(sbx, verb)
    ttl_cmds.register(sbx, verb)

    snap = verbs.add_parser("snapshot", help="named snapshots").add_subparsers(
        dest="sub", metavar="ACTION", parser_class=Parser, required=True
    )
    fork_cmds.register(sbx, snap, verbs, verb)

    p = verb(verbs, "run", exec_cmds.run, "create, exec, terminate: run ENV -- CMD...")
    p.add_argument("environment")
    _size_opts(p)
    net_cmds.add_option(p)
    secret_opts.add_create_options(p)
    _exec_opts(p)

    shell_cmds.register(verbs, verb)
    host_cmds.register(verbs, verb)
    service_cmds.register(verbs, verb)
    file_cmds.register(verbs, verb)
    mcp_cmd.register(verbs, verb)

    p = verb(verbs, "logs", sandbox_cmds.logs, "a sandbox's events, services' and console")
    p.add_argument("id", nargs="?")
    p.add_argument("--all", action="store_true", help="every sandbox's events, newest last")
    p.add_argument("-f", "--follow", action="store_true")

    verb(verbs, "doctor", doctor.doctor, "check this host can run sandboxes")

    from engine.cli import top_cmd

    p = verb(verbs, "top", top_cmd.top, "what each sandbox really costs (CoW-aware metering)")
    p.add_argument("--watch", action="store_true", help="redraw in place until Ctrl+C")
    p.add_argument("--sort", metavar="COLUMN", help="sort by a column, e.g. UNIQUE-MEM or CPU%%")
    p.add_argument("--interval", type=float, metavar="S", help="--watch refresh (default 1 s)")
    p.add_argument("-a", "--all", action="store_true", help="include terminated sandboxes")

    from engine.cli import ui_cmd

    ui_cmd.add_arguments(verb(verbs, "ui", ui_cmd.ui, "open the terminal dashboard", host=False))

    from engine.cli import demo

    verb(verbs, "demo", demo.demo, "a guided tour on real sandboxes")
    return root


def split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, command = split_command(argv)
    as_json = "--json" in own
    ctx: Context | None = None
    try:
        args = build_parser().parse_args(own)
        if not getattr(args, "handler", None):
            build_parser().print_help()
            return 2
        args.command = command
        ctx = Context(args, Paths.from_env())
        return int(args.handler(ctx))
    except GroveError as exc:
        print_error(exc, as_json)
        verb = argv[0] if argv else ""
        return exec_cmds.EXIT_GROVE_ERROR if verb in ("run",) or "exec" in own[:2] else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    finally:
        if ctx is not None:
            ctx.close()


if __name__ == "__main__":
    sys.exit(main())
