"""Client side of the engine API: connect (starting the engine on demand) and unwrap errors."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import grpc

from engine.api import grove_pb2 as pb
from engine.api import grove_pb2_grpc as pb_grpc
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


def grove_error(exc: grpc.RpcError) -> GroveError:
    details = exc.details() if hasattr(exc, "details") else str(exc)
    code = exc.code() if hasattr(exc, "code") else None
    with contextlib.suppress(Exception):
        return GroveError.from_json(details or "")
    if code == grpc.StatusCode.UNAVAILABLE:
        return GroveError(
            "engine_unreachable",
            f"lost the engine connection: {details}",
            "check 'grove engine status'",
        )
    return GroveError("rpc_failed", f"engine call failed: {details}", "see the engine log")


class EngineClient:
    """Blocking client used by the CLI; the dashboard wraps the same stub in workers."""

    def __init__(self, paths: Paths, autostart: bool = True) -> None:
        self.paths = paths
        if not socket_alive(paths):
            if not autostart:
                raise engine_unreachable(paths, "no engine is running")
            start_engine(paths)
        self.channel = grpc.insecure_channel(
            f"unix:{paths.socket}",
            options=[
                ("grpc.max_send_message_length", 64 << 20),
                ("grpc.max_receive_message_length", 64 << 20),
            ],
        )
        self.stub = pb_grpc.EngineStub(self.channel)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self.channel.close()

    def call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise grove_error(exc) from None

    def stream(self, method: str, request: Any) -> Iterator[Any]:
        try:
            yield from getattr(self.stub, method)(request)
        except grpc.RpcError as exc:
            raise grove_error(exc) from None

    def status(self) -> pb.EngineStatus:
        status: pb.EngineStatus = self.call("Status", pb.Empty(), timeout=10)
        return status
