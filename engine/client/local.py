"""The engine on this host: is it serving, and starting it on demand (detached)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from engine.config import Paths
from engine.errors import GroveError

ENGINE_START_TIMEOUT = 20.0


def engine_unreachable(paths: Paths, detail: str) -> GroveError:
    return GroveError(
        "engine_unreachable",
        f"cannot reach the engine at {paths.socket}: {detail}",
        f"start it with 'grove engine start' and see {paths.log}",
    )


def socket_alive(paths: Paths) -> bool:
    if not paths.socket.exists():
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(paths.socket))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def start_engine(paths: Paths) -> int:
    """Spawn the daemon detached from this terminal; return its pid once it serves."""
    try:
        paths.ensure()
    except OSError as exc:
        raise GroveError(
            "engine_unreachable",
            f"cannot use {paths.home} for engine state: {exc.strerror}",
            "set GROVE_HOME to a writable directory",
        ) from None
    with open(os.devnull, "rb") as devnull_in, open(os.devnull, "wb") as devnull_out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.daemon", "--home", str(paths.home)],
            stdin=devnull_in,
            stdout=devnull_out,
            stderr=devnull_out,
            start_new_session=True,
            close_fds=True,
            env={**os.environ, "GROVE_HOME": str(paths.home)},
        )
    deadline = time.monotonic() + ENGINE_START_TIMEOUT
    while time.monotonic() < deadline:
        if socket_alive(paths):
            return proc.pid
        code = proc.poll()
        if code is not None:
            if socket_alive(paths):  # lost a start race to another client: fine
                return proc.pid
            tail = (
                paths.log.read_text(errors="replace").strip().splitlines()[-1:]
                if (paths.log.exists())
                else []
            )
            raise engine_unreachable(paths, f"engine exited with {code}: {' '.join(tail)}")
        time.sleep(0.05)
    raise engine_unreachable(paths, "engine did not start in time")


def ensure_engine(paths: Paths, autostart: bool = True) -> None:
    """Return once an engine serves paths.socket, starting one if allowed (blocking)."""
    if socket_alive(paths):
        return
    if not autostart:
        raise engine_unreachable(paths, "no engine is running")
    start_engine(paths)
