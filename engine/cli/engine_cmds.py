"""grove engine start|stop|status."""

from __future__ import annotations

import time

from engine import daemon
from engine.api import grove_pb2 as pb
from engine.cli.context import Context
from engine.cli.output import emit_json
from engine.client import EngineClient, socket_alive, start_engine
from engine.vmm import accel


def start(ctx: Context) -> int:
    if ctx.args.foreground:
        return daemon.main(["--home", str(ctx.paths.home)])
    if socket_alive(ctx.paths):
        print("engine already running") if not ctx.json else None
    else:
        start_engine(ctx.paths)
    return status(ctx)


def stop(ctx: Context) -> int:
    if not socket_alive(ctx.paths):
        if ctx.json:
            emit_json({"running": False, "stopped": False})
        else:
            print("engine is not running")
        return 0
    client = EngineClient(ctx.paths, autostart=False)
    pid = client.status().pid
    client.call("Shutdown", pb.Empty(), timeout=10)
    client.close()
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
    if not socket_alive(ctx.paths):
        probe = accel.probe()
        if ctx.json:
            emit_json({"running": False, "pid": None, "socket": str(ctx.paths.socket),
                       "accelerator": probe.name})  # fmt: skip
        else:
            print(f"engine not running (socket {ctx.paths.socket}); would use {probe.reason}")
        return 3  # like systemctl status: not running
    st = EngineClient(ctx.paths, autostart=False).status()
    if ctx.json:
        emit_json({
            "running": True, "pid": st.pid, "socket": st.socket, "accelerator": st.accelerator,
            "accelerator_reason": st.accelerator_reason, "home": st.home,
            "version": st.version, "sandboxes_running": st.sandboxes_running,
        })  # fmt: skip
    else:
        print(f"engine running, pid {st.pid}, version {st.version}")
        print(f"  socket       {st.socket}")
        print(f"  home         {st.home}")
        print(f"  accelerator  {st.accelerator} ({st.accelerator_reason})")
        print(f"  sandboxes    {st.sandboxes_running} running")
    return 0
