"""Support for the engine's services and shells: readiness probes, and signals to a terminal's
foreground job.

Services themselves are plain exec sessions supervised by the engine; what the engine cannot do
cheaply from outside is look at the guest: spawning ``test -e`` or ``bash -c '</dev/tcp/...'``
for every probe costs ~40 ms of a TCG vCPU each time and slows down the very service being
waited for. A probe here costs a syscall (file) or a socket on a worker thread (tcp, http).

``pty_signal`` exists because an interactive shell runs each foreground job in its own process
group: the shell's group (what ``signal`` reaches) is not where ``sleep`` runs, so ^C semantics
need the terminal's foreground group, which only the PTY master knows.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from .process import ExecSession, signal_number
from .server import Reply, RequestError, Server

MAX_TIMEOUT_MS = 60_000
DEFAULT_TIMEOUT_MS = 1_000
_MAX_STATUS_LINE = 1024


def _timeout_s(request: dict[str, Any]) -> float:
    value = request.get("timeout_ms", DEFAULT_TIMEOUT_MS)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_TIMEOUT_MS:
        raise RequestError("bad_request", f"timeout_ms must be 1..{MAX_TIMEOUT_MS}")
    return value / 1000.0


def split_host_port(target: str, default_port: int | None = None) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep:
        host, port = target, ""
    host = host.strip("[]") or "127.0.0.1"
    if not port and default_port is not None:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise RequestError("bad_request", f"bad port in {target[:80]!r}")
    return host, int(port)


def probe_file(path: str) -> str:
    return "" if os.path.exists(path) else f"{path} does not exist yet"


def probe_tcp(target: str, timeout: float) -> str:
    host, port = split_host_port(target)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return ""
    except OSError as exc:
        return f"tcp {host}:{port}: {exc.strerror or exc}"


def parse_http_url(url: str) -> tuple[str, int, str]:
    if not url.startswith("http://"):
        raise RequestError("bad_request", "only http:// URLs can be probed")
    rest = url[len("http://") :]
    hostport, slash, path = rest.partition("/")
    host, port = split_host_port(hostport, default_port=80)
    return host, port, "/" + path if slash else "/"


def probe_http(url: str, timeout: float) -> str:
    """GET url; ready on any 2xx or 3xx status. Raw socket: http.client is a slow import."""
    host, port, path = parse_http_url(url)
    request = (
        f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: grove-probe\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1", "replace")
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(request)
            head = b""
            while b"\n" not in head and len(head) < _MAX_STATUS_LINE:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(_MAX_STATUS_LINE)
                if not chunk:
                    break
                head += chunk
    except OSError as exc:
        return f"http {host}:{port}: {exc.strerror or exc}"
    line = head.split(b"\n", 1)[0].decode("latin-1").strip()
    parts = line.split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return f"http {url}: not an HTTP response ({line[:60]!r})"
    status = int(parts[1])
    if 200 <= status < 400:
        return ""
    return f"http {url}: status {status}"


class ServiceOps:
    def __init__(self, server: Server) -> None:
        self.server = server
        server.register("probe", self.op_probe)
        server.register("pty_signal", self.op_pty_signal)

    def op_probe(self, channel: int, request: dict[str, Any]) -> Reply | None:
        kind = request.get("kind")
        target = request.get("target")
        if not isinstance(target, str) or not target or "\0" in target:
            raise RequestError("bad_request", "target must be a non-empty string")
        timeout = _timeout_s(request)
        if kind == "file":
            return _result(probe_file(target))
        if kind == "tcp":
            split_host_port(target)  # answer a malformed target at once, not from a thread
            self.server.run_blocking(channel, "probe", lambda: _result(probe_tcp(target, timeout)))
            return None
        if kind == "http":
            parse_http_url(target)
            self.server.run_blocking(channel, "probe", lambda: _result(probe_http(target, timeout)))
            return None
        raise RequestError("bad_request", "kind must be file, tcp or http")

    def op_pty_signal(self, channel: int, request: dict[str, Any]) -> Reply:
        """Signal the foreground process group of a PTY session's terminal (what ^C reaches)."""
        signum = signal_number(request.get("signal"))
        target = request.get("target_channel")
        session = self.server.sessions.get(target) if isinstance(target, int) else None
        if not isinstance(session, ExecSession) or not session.pty:
            raise RequestError("no_such_session", f"no PTY session on channel {target!r}")
        fd = session.stdin_fd
        if fd is None or session.done:
            raise RequestError("not_running", "the terminal is closed")
        try:
            group = os.tcgetpgrp(fd)
        except OSError:
            group = session.pid  # no foreground job known: the session leader's group
        try:
            os.killpg(group, signum)
        except ProcessLookupError:
            raise RequestError("not_running", "the foreground job has exited") from None
        return {"ok": True, "pgid": group}


def _result(error: str) -> Reply:
    return {"ok": True, "ready": not error, "error": error}
