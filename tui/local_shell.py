"""A ShellSession on a local PTY: the terminal widget's test bench, and a local shell."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import shutil
import signal
import struct
import termios
from collections.abc import AsyncIterator, Mapping, Sequence


def default_shell() -> list[str]:
    """bash without rc files when there is one, else sh."""
    bash = shutil.which("bash")
    if bash:
        return [bash, "--norc", "--noprofile", "-i"]
    return [shutil.which("sh") or "/bin/sh", "-i"]


def _set_winsize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class LocalShell:
    """pty.fork() a program and expose it as a ShellSession."""

    def __init__(
        self,
        argv: Sequence[str] | None = None,
        cols: int = 80,
        rows: int = 24,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.argv = list(argv or default_shell())
        self.cols, self.rows = cols, rows
        self.env = {**os.environ, "TERM": "xterm-256color", **(env or {})}
        self.env.pop("COLUMNS", None)
        self.env.pop("LINES", None)
        self.cwd = cwd
        self.pid = 0
        self.fd = -1
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._exit_code: int | None = None

    @property
    def shell_id(self) -> str:
        return ""  # a local PTY: nothing to re-attach to

    async def start(self) -> LocalShell:
        pid, fd = pty.fork()
        if pid == 0:  # child: never returns
            try:
                _set_winsize(0, self.cols, self.rows)
                if self.cwd:
                    os.chdir(self.cwd)
                os.execvpe(self.argv[0], self.argv, self.env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        os.set_blocking(fd, False)
        asyncio.get_running_loop().add_reader(fd, self._readable)
        return self

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: the child closed the PTY
            data = b""
        if data:
            self._queue.put_nowait(data)
        else:
            asyncio.get_running_loop().remove_reader(self.fd)
            self._queue.put_nowait(None)

    async def output(self) -> AsyncIterator[bytes]:
        while True:
            data = await self._queue.get()
            if data is None:
                break
            yield data
        self._exit_code = await asyncio.to_thread(self._reap)

    def _reap(self) -> int | None:
        if not self.pid:
            return None
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            return self._exit_code
        self.pid = 0
        return os.waitstatus_to_exitcode(status)

    @property
    def exit_code(self) -> int | None:
        return self._exit_code

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self.fd >= 0:
            try:
                written = os.write(self.fd, view)
            except BlockingIOError:
                await asyncio.sleep(0.005)  # the PTY is full: the program is not reading
                continue
            except OSError:
                return
            view = view[written:]

    async def resize(self, cols: int, rows: int) -> None:
        self.cols, self.rows = cols, rows
        if self.fd >= 0:
            # The kernel sends SIGWINCH to the PTY's foreground process group.
            _set_winsize(self.fd, cols, rows)

    async def close(self) -> None:
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGHUP)
            for _ in range(50):
                try:
                    done, _status = os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:
                    done = self.pid
                if done:
                    self.pid = 0
                    break
                await asyncio.sleep(0.02)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                await asyncio.to_thread(self._reap)
        if self.fd >= 0:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.fd)
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
            self._queue.put_nowait(None)
