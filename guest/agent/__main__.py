"""Entry point: ``python3 -m guest.agent [--connect unix:PATH] [--port NAME] [--log LEVEL]``.

In the VM the agent talks over the virtio-serial port named ``ctl``. ``--connect unix:PATH``
connects to a unix socket server instead, standing in for QEMU's chardev in host tests.
``GROVE_AGENT_TEST_MODE=1`` turns the clock step and hostname change of restore_identity into
no-ops (still reported) and makes shutdown exit instead of powering off.
"""

from __future__ import annotations

import os
import signal
import sys

from . import VERSION, log
from .files import FileOps
from .loop import Loop
from .process import ProcessOps, Reaper
from .server import Server
from .services import ServiceOps
from .system import SystemOps, become_subreaper
from .transport import Transport, UnixSocketTransport, VirtioPortTransport
from .tree import TreeOps

USAGE = "usage: python3 -m guest.agent [--connect unix:PATH] [--port NAME] [--log LEVEL]"


def parse_args(args: list[str]) -> dict[str, str]:
    # argparse would be fine but costs ~10 ms of imports, ~0.1 s under TCG.
    options = {"port": "ctl", "connect": "", "log": ""}
    it = iter(args)
    for arg in it:
        if arg in ("-h", "--help"):
            print(USAGE)
            sys.exit(0)
        if arg == "--version":
            print(VERSION)
            sys.exit(0)
        key, eq, value = arg.partition("=")
        name = key.removeprefix("--")
        if not key.startswith("--") or name not in options:
            sys.exit(f"unknown argument {arg!r}\n{USAGE}")
        if not eq:
            value = next(it, "")
        options[name] = value
    return options


def make_transport(options: dict[str, str]) -> Transport:
    target = options["connect"]
    if not target:
        return VirtioPortTransport(options["port"])
    if target.startswith("unix:"):
        return UnixSocketTransport(target.removeprefix("unix:"))
    sys.exit(f"unsupported --connect target {target!r} (use unix:PATH)")


def main(argv: list[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    if options["log"]:
        log.set_level(options["log"])
    test_mode = os.environ.get("GROVE_AGENT_TEST_MODE", "") not in ("", "0")
    become_subreaper()
    loop = Loop()
    server = Server(loop, make_transport(options), test_mode=test_mode)
    reaper = Reaper(loop)
    ProcessOps(server, reaper)
    SystemOps(server)
    FileOps(server)
    TreeOps(server)
    ServiceOps(server)

    def stop() -> None:
        log.info("terminating: killing sessions")
        server.terminate_sessions()
        loop.stop()

    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.add_signal_handler(signal.SIGINT, stop)
    # Children reaped before we started watching them (there are none yet) cannot be missed.
    reaper.reap()
    server.start()
    loop.run()
    server.transport.close()
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
