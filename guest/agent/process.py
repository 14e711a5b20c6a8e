"""Exec sessions: spawn a command, stream its output under credit, report how it ended.

Each command runs in its own session and process group, so a timeout or signal reaches
everything it started. Output is read only while the engine has granted credit: an unread
stream leaves data in the pipe and the process blocks on write (back-pressure), instead of the
agent buffering it. The agent reaps every child itself (it is a subreaper), so ``Popen`` objects
are kept only to stop subprocess from polling them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import struct
import subprocess
import time
from collections.abc import Callable
from typing import Any

from ..protocol import DATA_CHUNK, STDERR, STDIN, STDOUT, encode_data
from . import log
from .flow import RecvWindow, SendWindow
from .loop import Loop, Timer
from .server import Reply, RequestError, Server, Session

# Linux ioctl numbers; the termios module is not part of python3-minimal.
TIOCSWINSZ = 0x5414
TIOCSCTTY = 0x540E

#: After a timeout kill, wait this long for the pipes to close; a daemon that left the process
#: group may still hold them, and the caller is owed an answer.
KILL_GRACE_S = 1.0

SIGNALS = {
    name: getattr(signal, "SIG" + name)
    for name in ("INT", "TERM", "HUP", "KILL", "QUIT", "USR1", "USR2", "STOP", "CONT", "WINCH")
}

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Agent-only variables that must not leak into user commands.
_PRIVATE_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE")


def base_environment() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV and not k.startswith("GROVE_")
    }
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOME", "/root" if os.geteuid() == 0 else "/")
    env.setdefault("LANG", "C.UTF-8")
    return env


def signal_number(name: object) -> int:
    if not isinstance(name, str):
        raise RequestError("bad_request", "signal must be a name such as TERM")
    key = name.upper().removeprefix("SIG")
    if key not in SIGNALS:
        raise RequestError("bad_request", f"unsupported signal {name[:16]!r}")
    return int(SIGNALS[key])


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name.removeprefix("SIG")
    except ValueError:
        return str(number)


def describe_status(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    return f"exit {code}" if code >= 0 else f"signal {signal_name(-code)}"


class Reaper:
    """Collects every child's exit status (ours and orphans re-parented to us)."""

    def __init__(self, loop: Loop) -> None:
        self._watchers: dict[int, Callable[[int], None]] = {}
        self.orphans_reaped = 0
        loop.add_signal_handler(signal.SIGCHLD, self.reap)

    def watch(self, pid: int, callback: Callable[[int], None]) -> None:
        self._watchers[pid] = callback

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            callback = self._watchers.pop(pid, None)
            if callback is None:
                self.orphans_reaped += 1
                if log.enabled("debug"):
                    log.debug(f"reaped orphan {pid}: {describe_status(status)}")
            else:
                callback(status)


class ExecSession(Session):
    kind = "exec"

    def __init__(
        self,
        server: Server,
        channel: int,
        popen: subprocess.Popen[bytes],
        argv0: str,
        outputs: dict[int, int],
        stdin_fd: int | None,
        timeout_s: float | None,
        pty: bool,
    ) -> None:
        super().__init__(server, channel)
        self.loop = server.loop
        self.popen = popen
        self.pid = popen.pid
        self.argv0 = argv0
        self.pty = pty
        self.started = time.monotonic()
        self.outputs = dict(outputs)  # stream -> fd, while open
        self._reading: set[int] = set()
        self._readers = {stream: self._reader(stream) for stream in outputs}
        self.window = SendWindow()
        self.stdin_fd = stdin_fd
        self._stdin_buf = bytearray()
        self._stdin_eof = False
        self._stdin_writer = False
        self.recv = RecvWindow()
        self.status: int | None = None
        self.duration_ms = 0.0
        self.timed_out = False
        self.finished = False
        self._timer: Timer | None = None
        if timeout_s is not None:
            self._timer = self.loop.call_later(timeout_s, self._on_timeout)

    def _reader(self, stream: int) -> Callable[[], None]:
        return lambda: self._on_output(stream)

    # -- output ----------------------------------------------------------------------------

    def _update_interest(self) -> None:
        want = self.attached and self.window.available > 0 and self.server.can_send()
        for stream, fd in self.outputs.items():
            if want and fd not in self._reading:
                self.loop.add_reader(fd, self._readers[stream])
                self._reading.add(fd)
            elif not want and fd in self._reading:
                self.loop.remove_reader(fd)
                self._reading.discard(fd)

    def _on_output(self, stream: int) -> None:
        fd = self.outputs.get(stream)
        if fd is None:
            return
        size = min(self.window.available, DATA_CHUNK)
        if size <= 0 or not self.server.can_send():
            self._update_interest()
            return
        try:
            data = os.read(fd, size)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:  # EIO: the PTY's last slave fd closed, i.e. EOF
                log.warning(f"exec channel {self.channel}: read: {exc}")
            data = b""
        if not data:
            self._close_output(stream)
            self._maybe_finish()
            return
        self.window.take(len(data))
        self.server.send(encode_data(self.channel, stream, data))
        if self.window.available <= 0 or not self.server.can_send():
            self._update_interest()

    def _close_output(self, stream: int) -> None:
        fd = self.outputs.pop(stream, None)
        if fd is None:
            return
        self._reading.discard(fd)
        if fd == self.stdin_fd:
            # A PTY master serves both directions: the input side owns and closes it.
            self.loop.remove_reader(fd)
            return
        self.loop.forget(fd)
        os.close(fd)

    def on_window(self, credit: int) -> None:
        self.window.grant(credit)
        self._update_interest()

    def on_room(self) -> None:
        self._update_interest()

    # -- input -----------------------------------------------------------------------------

    def on_data(self, stream: int, data: bytes) -> None:
        if stream != STDIN:
            return
        if not data:
            self._stdin_eof = True
            self._pump_stdin()
            return
        if not self.recv.received(len(data)):
            log.debug(f"exec channel {self.channel}: engine exceeded its stdin window")
        if self.stdin_fd is None:
            self._grant(self.recv.consumed(len(data), idle=True))  # nowhere to go: discard
            return
        self._stdin_buf += data
        self._pump_stdin()

    def _grant(self, credit: int) -> None:
        if credit and self.attached:
            self.server.window(self.channel, credit)

    def _pump_stdin(self) -> None:
        fd = self.stdin_fd
        if fd is None:
            return
        buf = self._stdin_buf
        while buf:
            try:
                written = os.write(fd, buf[:DATA_CHUNK])
            except BlockingIOError:
                if not self._stdin_writer:
                    self._stdin_writer = True
                    self.loop.add_writer(fd, self._pump_stdin)
                return
            except OSError:
                # EPIPE: the process closed its stdin; what it did not read is discarded.
                written = len(buf)
                self._stdin_eof = True
            del buf[:written]
            self._grant(self.recv.consumed(written, idle=not buf))
        if self._stdin_writer:
            self._stdin_writer = False
            self.loop.remove_writer(fd)
        if self._stdin_eof:
            self._close_stdin()

    def _close_stdin(self) -> None:
        if self.stdin_fd is None:
            return
        if self.pty:
            # The master stays open for output: EOF on a terminal is ^D (at a line start).
            self._stdin_eof = False
            with contextlib.suppress(OSError):
                os.write(self.stdin_fd, b"\x04")
            return
        fd, self.stdin_fd = self.stdin_fd, None
        self._stdin_writer = False
        self.loop.forget(fd)
        os.close(fd)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._update_interest()

    def on_reaped(self, status: int) -> None:
        self.status = status
        self.duration_ms = round((time.monotonic() - self.started) * 1000.0, 3)
        # Keep subprocess from ever polling this pid again (it could be reused).
        self.popen.returncode = os.waitstatus_to_exitcode(status)
        if self._timer is not None and not self.timed_out:
            self._timer.cancel()
            self._timer = None
        self._maybe_finish()

    def _on_timeout(self) -> None:
        self._timer = None
        if self.finished:
            return
        self.timed_out = True
        log.info(f"exec channel {self.channel}: timeout, killing process group {self.pid}")
        self._killpg(signal.SIGKILL)
        self._timer = self.loop.call_later(KILL_GRACE_S, self._after_kill)

    def _after_kill(self) -> None:
        self._timer = None
        if self.finished:
            return
        for stream in list(self.outputs):
            self._close_output(stream)
        self._maybe_finish()

    def _killpg(self, signum: int) -> bool:
        try:
            os.killpg(self.pid, signum)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return False

    def send_signal(self, signum: int) -> bool:
        if self.finished:
            return False
        return self._killpg(signum)

    def resize(self, rows: int, cols: int) -> None:
        if not self.pty:
            raise RequestError("bad_request", "not a PTY session")
        fd = self.outputs.get(STDOUT, self.stdin_fd)
        if fd is None:
            raise RequestError("not_running", "the terminal is closed")
        fcntl.ioctl(fd, TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def exit_info(self) -> dict[str, Any]:
        status = self.status if self.status is not None else 0
        code = os.waitstatus_to_exitcode(status)
        return {
            "exit_code": code if code >= 0 else None,
            "signal": signal_name(-code) if code < 0 else None,
            "timed_out": self.timed_out,
            "duration_ms": self.duration_ms,
        }

    def _maybe_finish(self) -> None:
        if self.finished or self.status is None or self.outputs or not self.attached:
            return
        self.finished = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stdin_buf.clear()
        if self.pty:
            self._forget_pty_fd()
        else:
            self._stdin_eof = True
            self._close_stdin()
        self.server.reply(self.channel, {"event": "exit", **self.exit_info()})
        self.server.end_session(self.channel)

    def _forget_pty_fd(self) -> None:
        fd, self.stdin_fd = self.stdin_fd, None
        self._stdin_writer = False
        if fd is not None:
            self.outputs.pop(STDOUT, None)
            self._reading.discard(fd)
            self.loop.forget(fd)
            os.close(fd)

    # -- peers -----------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.status is not None

    def detach(self) -> None:
        super().detach()
        self._update_interest()

    def attach(self) -> None:
        self.attached = True
        self.window.reset()
        self.recv.reset()
        self.server.reply(self.channel, {"ok": True, "pid": self.pid, "attached": True})
        self._update_interest()
        self._maybe_finish()

    def describe(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "kind": self.kind,
            "pid": self.pid,
            "argv0": self.argv0,
            "pty": self.pty,
            "state": "exited" if self.status is not None else "running",
            "exit": self.exit_info() if self.status is not None else None,
        }

    def terminate(self) -> None:
        if self.status is None:
            self._killpg(signal.SIGKILL)
        for stream in list(self.outputs):
            self._close_output(stream)
        if self.pty:
            self._forget_pty_fd()
        else:
            self._stdin_eof = True
            self._close_stdin()


# -- request parsing -------------------------------------------------------------------------


def _argv(request: dict[str, Any]) -> list[str]:
    argv = request.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise RequestError("bad_request", "argv must be a non-empty list of strings")
    return argv


def _env(request: dict[str, Any], base: dict[str, str]) -> dict[str, str]:
    extra = request.get("env")
    if extra is None:
        return dict(base)
    if not isinstance(extra, dict):
        raise RequestError("bad_request", "env must be an object of strings")
    env = dict(base)
    for key, value in extra.items():
        # Never echo values: this is where secrets travel.
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise RequestError("bad_request", "env has an invalid variable name")
        if value is None:
            env.pop(key, None)
        elif isinstance(value, str) and "\0" not in value:
            env[key] = value
        else:
            raise RequestError("bad_request", f"env value of {key[:64]} is not a string")
    return env


def _timeout(request: dict[str, Any]) -> float | None:
    value = request.get("timeout_s")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise RequestError("bad_request", "timeout_s must be a positive number")
    return float(value)


def _winsize(request: dict[str, Any]) -> tuple[int, int]:
    rows, cols = request.get("rows", 24), request.get("cols", 80)
    if not isinstance(rows, int) or not isinstance(cols, int):
        raise RequestError("bad_request", "rows and cols must be integers")
    if not (0 < rows < 10000 and 0 < cols < 10000):
        raise RequestError("bad_request", "rows and cols out of range")
    return rows, cols


def _spawn_error(exc: OSError, argv0: str, cwd: str | None) -> RequestError:
    filename = getattr(exc, "filename", None)
    reason = exc.strerror or str(exc)
    if cwd is not None and filename == cwd:
        return RequestError("bad_cwd", f"cannot use {cwd} as working directory: {reason}")
    if isinstance(exc, FileNotFoundError):
        return RequestError("not_found", f"{argv0}: command not found")
    if isinstance(exc, PermissionError):
        return RequestError("permission_denied", f"{argv0}: {reason}")
    return RequestError("exec_failed", f"{argv0}: {reason}")


def _set_nonblocking(fd: int) -> None:
    os.set_blocking(fd, False)


# -- ops -------------------------------------------------------------------------------------


class ProcessOps:
    def __init__(self, server: Server, reaper: Reaper) -> None:
        self.server = server
        self.reaper = reaper
        self.base_env = base_environment()
        server.register("exec", self.op_exec)
        server.register("signal", self.op_signal)
        server.register("pty_resize", self.op_pty_resize)

    def _session(self, request: dict[str, Any]) -> ExecSession:
        target = request.get("target_channel")
        session = self.server.sessions.get(target) if isinstance(target, int) else None
        if not isinstance(session, ExecSession):
            raise RequestError("no_such_session", f"no exec session on channel {target!r}")
        return session

    def op_signal(self, channel: int, request: dict[str, Any]) -> Reply:
        signum = signal_number(request.get("signal"))
        session = self._session(request)
        if not session.send_signal(signum):
            raise RequestError("not_running", "the process group has exited")
        return {"ok": True}

    def op_pty_resize(self, channel: int, request: dict[str, Any]) -> Reply:
        rows, cols = _winsize(request)
        self._session(request).resize(rows, cols)
        return {"ok": True}

    def op_exec(self, channel: int, request: dict[str, Any]) -> Reply | None:
        argv = _argv(request)
        env = _env(request, self.base_env)
        cwd = request.get("cwd")
        if cwd is not None and not isinstance(cwd, str):
            raise RequestError("bad_request", "cwd must be a string")
        timeout_s = _timeout(request)
        if request.get("pty"):
            session = self._spawn_pty(channel, argv, env, cwd, timeout_s, request)
        else:
            session = self._spawn_pipes(channel, argv, env, cwd, timeout_s, request)
        self.server.add_session(session)
        self.reaper.watch(session.pid, session.on_reaped)
        if log.enabled("debug"):
            log.debug(f"exec channel {channel}: pid {session.pid} {os.path.basename(argv[0])}")
        self.server.reply(channel, {"ok": True, "pid": session.pid})
        session.start()
        return None

    def _popen(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: str | None,
        stdin: int,
        stdout: int,
        stderr: int,
        preexec: Callable[[], None] | None = None,
    ) -> subprocess.Popen[bytes]:
        try:
            # preexec (PTY only) forces fork instead of vfork; pipes keep the fast path.
            return subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                cwd=cwd,
                env=env,
                start_new_session=True,
                close_fds=True,
                preexec_fn=preexec,
            )
        except OSError as exc:
            raise _spawn_error(exc, argv[0], cwd) from None
        except (ValueError, TypeError) as exc:
            raise RequestError("bad_request", str(exc)) from None

    def _spawn_pipes(
        self,
        channel: int,
        argv: list[str],
        env: dict[str, str],
        cwd: str | None,
        timeout_s: float | None,
        request: dict[str, Any],
    ) -> ExecSession:
        want_stdin = bool(request.get("stdin", False))
        child_fds: list[int] = []
        parent_fds: list[int] = []
        try:
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            parent_fds.append(out_r)
            child_fds.append(out_w)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            parent_fds.append(err_r)
            child_fds.append(err_w)
            stdin_w: int | None = None
            if want_stdin:
                in_r, stdin_w = os.pipe2(os.O_CLOEXEC)
                child_fds.append(in_r)
                parent_fds.append(stdin_w)
            else:
                in_r = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                child_fds.append(in_r)
            popen = self._popen(argv, env, cwd, in_r, out_w, err_w)
        except BaseException:
            for fd in parent_fds:
                os.close(fd)
            raise
        finally:
            for fd in child_fds:
                os.close(fd)
        for fd in parent_fds:
            _set_nonblocking(fd)
        return ExecSession(
            self.server,
            channel,
            popen,
            os.path.basename(argv[0]),
            {STDOUT: out_r, STDERR: err_r},
            stdin_w,
            timeout_s,
            pty=False,
        )

    def _spawn_pty(
        self,
        channel: int,
        argv: list[str],
        env: dict[str, str],
        cwd: str | None,
        timeout_s: float | None,
        request: dict[str, Any],
    ) -> ExecSession:
        rows, cols = _winsize(request)
        term = request.get("term", "xterm-256color")
        if not isinstance(term, str):
            raise RequestError("bad_request", "term must be a string")
        env = dict(env)
        extra = request.get("env")
        if not (isinstance(extra, dict) and "TERM" in extra):
            env["TERM"] = term
        master, slave = os.openpty()
        try:
            os.set_inheritable(master, False)
            fcntl.ioctl(slave, TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            popen = self._popen(argv, env, cwd, slave, slave, slave, _take_ctty)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        _set_nonblocking(master)
        # One fd serves both directions; output is all on stream 1 (a terminal merges them).
        return ExecSession(
            self.server,
            channel,
            popen,
            os.path.basename(argv[0]),
            {STDOUT: master},
            master,
            timeout_s,
            pty=True,
        )


def _take_ctty() -> None:
    # Runs in the child after setsid: make the PTY slave (now fd 0) its controlling terminal,
    # so job control and ^C work in the shell.
    fcntl.ioctl(0, TIOCSCTTY, 0)
