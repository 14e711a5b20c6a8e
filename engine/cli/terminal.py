"""Attach this terminal to a guest shell: raw mode, resize on SIGWINCH, a detach key.

Every key goes to the guest as typed (Ctrl+C included: the guest's terminal turns it into
SIGINT for its foreground job), output is written as it comes, and the terminal is restored on
any exit. Ctrl+] then d detaches and leaves the shell running; Ctrl+] twice sends one Ctrl+].
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import termios
import threading
import time
import tty
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from engine.client import Grove, ShellExit, SyncShellStream
from engine.errors import GroveError

DETACH_PREFIX = 0x1D  # Ctrl+]
DETACH_KEY = ord("d")
DETACH_HELP = "Ctrl+] d"
READ_SIZE = 65536


@dataclass
class Outcome:
    shell_id: str = ""
    sandbox_id: str = ""
    detached: bool = False
    exit: ShellExit | None = None
    error: GroveError | None = None


def _terminal_size(fd: int) -> tuple[int, int]:
    for candidate in (fd, sys.stdout.fileno()):
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(candidate)
            return size.lines, size.columns
    return 24, 80


class DetachFilter:
    """Finds Ctrl+] d in typed bytes; everything else passes through."""

    def __init__(self) -> None:
        self.pending = False

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        if not self.pending and DETACH_PREFIX not in data:
            return data, False
        out = bytearray()
        for byte in data:
            if self.pending:
                self.pending = False
                if byte == DETACH_KEY:
                    return bytes(out), True
                if byte != DETACH_PREFIX:
                    out.append(DETACH_PREFIX)
                out.append(byte)
            elif byte == DETACH_PREFIX:
                self.pending = True
            else:
                out.append(byte)
        return bytes(out), False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[written:]


REATTACH_FOR_S = 60.0


def _reattach(client: Grove, outcome: Outcome, fd_in: int, fd_out: int) -> SyncShellStream | None:
    """The connection to a remote engine dropped: attach to the same shell again once the
    tunnel is back (its scrollback replays on a cleared screen), or give up after a minute."""
    _write_all(fd_out, b"\r\n\x1b[7m grove: connection lost, reattaching... \x1b[0m\r\n")
    deadline = time.monotonic() + REATTACH_FOR_S
    delay = 0.5
    while time.monotonic() < deadline:
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
        rows, cols = _terminal_size(fd_in)
        try:
            stream = client.shell(outcome.sandbox_id, shell_id=outcome.shell_id, cols=cols,
                                  rows=rows)  # fmt: skip
        except GroveError:
            continue
        _write_all(fd_out, b"\x1b[H\x1b[2J")
        return stream
    return None


def attach(
    client: Grove, sandbox: str, shell_id: str = "", cwd: str = "", shell: str = "",
    no_replay: bool = False, secret_env: Sequence[str] = (),
) -> Outcome:  # fmt: skip
    """Run the interactive session until the shell exits or the user detaches."""
    fd_in, fd_out = sys.stdin.fileno(), sys.stdout.fileno()
    if not os.isatty(fd_in):
        raise GroveError(
            "not_a_terminal",
            "grove shell needs a terminal on stdin",
            "for scripts use 'grove shell open|write|read|close'",
        )
    rows, cols = _terminal_size(fd_in)
    stream = client.shell(
        sandbox, shell_id=shell_id, cols=cols, rows=rows, cwd=cwd, shell=shell,
        term=os.environ.get("TERM", ""), no_replay=no_replay, secret_env=secret_env,
    )  # fmt: skip
    outcome = Outcome(shell_id=stream.info.shell_id, sandbox_id=stream.info.sandbox_id)
    sys.stderr.write(
        f"grove: attached to shell {outcome.shell_id} in {outcome.sandbox_id}"
        f" (detach: {DETACH_HELP})\r\n"
    )
    sys.stderr.flush()
    wake_r, wake_w = os.pipe()

    live = [stream]  # the attached stream; replaced when a remote connection comes back

    def receive() -> None:
        try:
            while True:
                try:
                    for data in live[0].output():
                        _write_all(fd_out, data)
                    outcome.exit = live[0].exit
                    return
                except GroveError as exc:
                    if not client.remote or exc.code != "engine_unreachable":
                        raise
                    reattached = _reattach(client, outcome, fd_in, fd_out)
                    if reattached is None:
                        raise
                    live[0] = reattached
        except GroveError as exc:
            outcome.error = exc
        finally:
            os.write(wake_w, b"x")

    def on_winch(_signum: int, _frame: FrameType | None) -> None:
        rows, cols = _terminal_size(fd_in)
        with contextlib.suppress(GroveError):
            live[0].resize(cols, rows)

    def on_term(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally that restores the terminal

    saved = termios.tcgetattr(fd_in)
    handlers = {
        signal.SIGWINCH: signal.signal(signal.SIGWINCH, on_winch),
        signal.SIGTERM: signal.signal(signal.SIGTERM, on_term),
        signal.SIGHUP: signal.signal(signal.SIGHUP, on_term),
    }
    reader = threading.Thread(target=receive, name="shell-output", daemon=True)
    keys = DetachFilter()
    try:
        tty.setraw(fd_in, termios.TCSANOW)
        reader.start()
        while reader.is_alive():
            try:
                ready, _, _ = select.select([fd_in, wake_r], [], [])
            except InterruptedError:
                continue
            if wake_r in ready:
                break
            data = os.read(fd_in, READ_SIZE)
            if not data:
                break  # the terminal went away: leave the shell running
            data, detach = keys.feed(data)
            if data:
                with contextlib.suppress(GroveError):  # keys typed while reattaching are lost
                    live[0].write(data)
            if detach:
                outcome.detached = True
                break
    finally:
        termios.tcsetattr(fd_in, termios.TCSADRAIN, saved)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        if outcome.exit is None:
            with contextlib.suppress(GroveError):
                live[0].detach()  # the shell keeps running in the engine
        reader.join(timeout=2.0)
        os.close(wake_r)
        os.close(wake_w)
    if outcome.exit is not None:
        outcome.detached = False
    return outcome
