"""grove engine start|stop|status."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time

from engine import daemon
from engine.cli.context import Context
from engine.cli.output import emit_json
from engine.client import Grove, engine_unreachable, socket_alive, start_engine
from engine.client.local import ensure_engine
from engine.vmm import accel


def start(ctx: Context) -> int:
    if ctx.target is not None:
        return status(ctx)  # connecting starts the remote engine on demand
    if ctx.args.foreground:
        return daemon.main(["--home", str(ctx.paths.home)])
    if socket_alive(ctx.paths):
        print("engine already running") if not ctx.json else None
    else:
        start_engine(ctx.paths)
    return status(ctx)


def stop(ctx: Context) -> int:
    if ctx.target is not None:
        with Grove.connect(host=ctx.target, check_version=False) as remote:
            pid = remote.status().pid
            remote.shutdown()
        emit_json({"running": False, "stopped": True, "pid": pid}) if ctx.json else print(
            f"engine {pid} on {ctx.target.label} stopping"
        )
        return 0
    if not socket_alive(ctx.paths):
        if ctx.json:
            emit_json({"running": False, "stopped": False})
        else:
            print("engine is not running")
        return 0
    # Any engine can be stopped, also one of another version (that is how one upgrades).
    with Grove.connect(ctx.paths, autostart=False, check_version=False) as client:
        pid = client.status().pid
        client.shutdown()
    # Shutdown stops every VM first; wait until the socket is gone and the process ended.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (socket_alive(ctx.paths) or _alive(pid)):
        time.sleep(0.05)
    if ctx.json:
        emit_json({"running": False, "stopped": True, "pid": pid})
    else:
        print(f"engine {pid} stopped")
    return 0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def status(ctx: Context) -> int:
    if ctx.target is None and not socket_alive(ctx.paths):
        probe = accel.probe()
        if ctx.json:
            emit_json({"running": False, "pid": None, "socket": str(ctx.paths.socket),
                       "accelerator": probe.name})  # fmt: skip
        else:
            print(f"engine not running (socket {ctx.paths.socket}); would use {probe.reason}")
        return 3  # like systemctl status: not running
    extra: dict[str, str] = {}
    if ctx.target is not None:
        with Grove.connect(host=ctx.target, check_version=False) as client:
            st = client.status()
            extra = {"host": ctx.target.label, "transport": client.transport}
    else:
        with Grove.connect(ctx.paths, autostart=False, check_version=False) as client:
            st = client.status()
    if ctx.json:
        emit_json({"running": True, **st.to_json(), **extra})
    else:
        print(f"engine running, pid {st.pid}, version {st.version} (API {st.api_version})")
        print(f"  socket       {st.socket}")
        print(f"  home         {st.home}")
        print(f"  accelerator  {st.accelerator} ({st.accelerator_reason})")
        print(f"  sandboxes    {st.sandboxes_running} running")
        print(f"  network      {st.network_backend or '-'} (default policy "
              f"{st.network_default or '-'})")  # fmt: skip
        if extra:
            print(f"  reached via  {extra['host']} ({extra['transport']})")
    return 0


def dial_stdio(ctx: Context) -> int:
    """Copy stdin to the engine socket and the socket to stdout, until either side ends.

    A remote client runs this over an SSH exec channel where the server forbids socket
    forwarding; the bytes are the client's own gRPC connection.
    """
    ensure_engine(ctx.paths)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(ctx.paths.socket))
    except OSError as exc:
        raise engine_unreachable(ctx.paths, exc.strerror or str(exc)) from None
    stdin, stdout = sys.stdin.buffer.fileno(), sys.stdout.buffer.fileno()

    def upstream() -> None:
        with contextlib.suppress(OSError):
            while data := os.read(stdin, 65536):
                conn.sendall(data)
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)

    threading.Thread(target=upstream, daemon=True).start()
    with contextlib.suppress(OSError):
        while data := conn.recv(65536):
            view = memoryview(data)
            while view:
                view = view[os.write(stdout, view) :]
    conn.close()
    return 0
