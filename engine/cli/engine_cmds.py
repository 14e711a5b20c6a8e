"""grove engine start|stop|status."""

from __future__ import annotations

import time

from engine import daemon
from engine.cli.context import Context
from engine.cli.output import emit_json
from engine.client import Grove, socket_alive, start_engine
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
    if not socket_alive(ctx.paths):
        probe = accel.probe()
        if ctx.json:
            emit_json({"running": False, "pid": None, "socket": str(ctx.paths.socket),
                       "accelerator": probe.name})  # fmt: skip
        else:
            print(f"engine not running (socket {ctx.paths.socket}); would use {probe.reason}")
        return 3  # like systemctl status: not running
    with Grove.connect(ctx.paths, autostart=False, check_version=False) as client:
        st = client.status()
    if ctx.json:
        emit_json({"running": True, **st.to_json()})
    else:
        print(f"engine running, pid {st.pid}, version {st.version} (API {st.api_version})")
        print(f"  socket       {st.socket}")
        print(f"  home         {st.home}")
        print(f"  accelerator  {st.accelerator} ({st.accelerator_reason})")
        print(f"  sandboxes    {st.sandboxes_running} running")
    return 0
