"""One QEMU process: spawned or re-adopted, watched through a pidfd, killed with its sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from engine.errors import GroveError

# Raising a thread back from SCHED_IDLE needs root or an RLIMIT_NICE that allows nice 0;
# without it, VMs started ahead of need stay at normal priority rather than stay starved.
_CAN_RAISE = os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_NICE)[0] >= 20


def process_start_time(pid: int) -> int | None:
    """Start time in clock ticks since boot (field 22 of /proc/PID/stat): guards PID reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces or parentheses; fields resume after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def is_same_process(pid: int, start: int | None, exe: str) -> bool:
    if start is None or process_start_time(pid) != start:
        return False
    try:
        return os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(exe)
    except OSError:
        return False


@dataclass
class QemuProcess:
    pid: int
    start: int
    exe: str
    _popen: subprocess.Popen[bytes] | None = None
    _pidfd: int | None = None
    _exited: asyncio.Future[None] | None = None

    @classmethod
    def spawn(cls, argv: list[str], log: Path, pass_fds: tuple[int, ...] = ()) -> QemuProcess:
        with open(log, "ab") as out:
            # Own session: the engine's death or a Ctrl+C at its terminal never reaches QEMU,
            # and QEMU never holds the engine's stdio open.
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                pass_fds=pass_fds,
            )
        start = process_start_time(popen.pid)
        if start is None:
            popen.wait()
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise GroveError(
                "qemu_failed",
                f"QEMU exited at once: {' / '.join(tail) or 'no output'}",
                f"see {log}",
            )
        return cls(popen.pid, start, argv[0], popen)

    @classmethod
    def adopt(cls, pid: int, start: int | None, exe: str) -> QemuProcess | None:
        if not is_same_process(pid, start, exe):
            return None
        assert start is not None
        return cls(pid, start, exe)

    def alive(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        return is_same_process(self.pid, self.start, self.exe)

    def set_background(self, background: bool) -> None:
        """Run every thread at SCHED_IDLE (background) or normal priority. A VM started ahead
        of need (a warm pool VM, a fork loader) then only takes CPU that no sandbox in use
        wants, and is raised back when it is handed out. Threads QEMU starts later inherit."""
        if not _CAN_RAISE:
            return
        policy = os.SCHED_IDLE if background else os.SCHED_OTHER
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{self.pid}/task")]
        except OSError:
            return
        for tid in tids:
            with contextlib.suppress(OSError):
                os.sched_setscheduler(tid, policy, os.sched_param(0))

    async def wait(self) -> None:
        """Return when the process has exited (works for adopted, non-child processes too).

        Any number of waiters share one pidfd reader: asyncio keeps one callback per fd.
        """
        if self._exited is None:
            loop = asyncio.get_running_loop()
            self._exited = loop.create_future()
            if self._pidfd is None and self.alive():
                with contextlib.suppress(ProcessLookupError):
                    self._pidfd = os.pidfd_open(self.pid)
            fd = self._pidfd
            if fd is None or not self.alive():
                self._exited.set_result(None)
            else:
                loop.add_reader(fd, self._on_exit, fd)
                if not self.alive():  # exited between the check and the registration
                    self._on_exit(fd)
        await asyncio.shield(self._exited)
        if self._popen is not None:
            self._popen.wait()

    def _on_exit(self, fd: int) -> None:
        asyncio.get_running_loop().remove_reader(fd)
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(None)

    async def kill(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self._pidfd is None and self.alive():
                # Identity was checked just now; the pidfd pins it against PID reuse.
                self._pidfd = os.pidfd_open(self.pid)
            if self._pidfd is not None and self.alive():
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wait(), timeout)
        self.close()

    def close(self) -> None:
        if self._pidfd is not None:
            if self._exited is not None and not self._exited.done():
                self._on_exit(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
