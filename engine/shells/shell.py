"""One interactive shell: a guest PTY session, its scrollback, and the clients viewing it.

The engine, not a client, reads the terminal: output always lands in the scrollback, so a shell
keeps running when every client has gone and a client that comes back replays what it missed.
While clients are attached, the reader stays at most ``LAG_LIMIT`` bytes ahead of the slowest
one (back-pressure reaches the guest program through the agent's credit window), so an attached
client never loses output; with nobody attached the ring just keeps the latest bytes. A client
that stops reading for ``STALL_S`` no longer holds the shell back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.agent.client import AgentClient, AgentError, ExecHandle
from engine.errors import GroveError
from engine.secrets.redact import Redactor
from engine.shells.scrollback import Scrollback

log = logging.getLogger(__name__)

LAG_LIMIT = 256 * 1024
STALL_S = 5.0
#: A chunk's tail that may begin a secret waits this long for the rest, then is shown as is
#: (a terminal that echoes a keystroke must not wait for the next one).
HOLD_S = 0.05

RUNNING = "running"
EXITED = "exited"
#: The guest session is gone without an exit status (the sandbox stopped or rebooted).
LOST = "lost"


@dataclass
class ShellInfo:
    """What is persisted about a shell; enough to re-attach it after an engine restart."""

    shell_id: str
    sandbox_id: str
    channel: int
    argv: list[str]
    cwd: str
    cols: int
    rows: int
    term: str
    pid: int
    created_at: float
    state: str = RUNNING
    exit_code: int | None = None
    signal: str | None = None
    ended_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShellInfo:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class Viewer:
    """One attached client's position in the output."""

    __slots__ = ("cursor", "progressed_at", "state_version")

    def __init__(self, cursor: int, state_version: int) -> None:
        self.cursor = cursor
        self.progressed_at = time.monotonic()
        self.state_version = state_version


class Shell:
    def __init__(
        self,
        info: ShellInfo,
        on_change: Callable[[Shell], None],
        redactor: Redactor,
        scrollback: Scrollback | None = None,
    ) -> None:
        self.info = info
        self.scrollback = scrollback or Scrollback()
        # The scrollback holds output redacted: every read, replay and live view is too.
        self._redactor = redactor
        self._on_change = on_change
        self._agent: AgentClient | None = None
        self._handle: ExecHandle | None = None
        self._pump: asyncio.Task[None] | None = None
        self._viewers: set[Viewer] = set()
        self._changed = asyncio.Event()
        self._progress = asyncio.Event()
        #: Bumped on every change a viewer should be told about (size, state).
        self.state_version = 0

    # -- state -------------------------------------------------------------------------------

    @property
    def shell_id(self) -> str:
        return self.info.shell_id

    @property
    def running(self) -> bool:
        return self.info.state == RUNNING

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    def _wake(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def _state_changed(self) -> None:
        self.state_version += 1
        self._on_change(self)
        self._wake()

    # -- binding to a guest session --------------------------------------------------------

    def bind(self, agent: AgentClient, handle: ExecHandle) -> None:
        """Read this guest session from now on (a new one, or re-attached after a change)."""
        self.unbind()
        self._agent = agent
        self._handle = handle
        self.info.channel = handle.channel
        if handle.pid:
            self.info.pid = handle.pid
        self._pump = asyncio.create_task(self._read(handle), name=f"shell-{self.shell_id}")

    def unbind(self) -> None:
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
        self._pump = None
        self._handle = None
        self._agent = None

    async def _read(self, handle: ExecHandle) -> None:
        redact = self._redactor.stream()
        timer: asyncio.TimerHandle | None = None

        def release() -> None:
            held = redact.flush()
            if held:
                self.scrollback.append(held)
                self._wake()

        try:
            async for _, data in handle.output():
                if timer is not None:
                    timer.cancel()
                    timer = None
                shown = redact.feed(data)
                if shown:
                    self.scrollback.append(shown)
                    self._wake()
                if redact.holding:
                    timer = asyncio.get_running_loop().call_later(HOLD_S, release)
                await self._hold_for_viewers()
            if timer is not None:
                timer.cancel()
            release()
            status = await handle.wait()
        except AgentError as exc:
            # The connection went away; the guest session may live on. The watch re-binds us
            # when a new connection lists it, or ends us when the sandbox is gone.
            log.debug("shell %s lost its connection: %s", self.shell_id, exc)
            if self._handle is handle:
                self._handle = None
            self._wake()
            return
        self.finish(EXITED, status.exit_code, status.signal)

    async def _hold_for_viewers(self) -> None:
        while True:
            now = time.monotonic()
            laggards = [
                v
                for v in self._viewers
                if self.scrollback.end - v.cursor > LAG_LIMIT and now - v.progressed_at < STALL_S
            ]
            if not laggards:
                return
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), STALL_S)

    def finish(self, state: str, exit_code: int | None = None, sig: str | None = None) -> None:
        if not self.running:
            return
        self.info.state = state
        self.info.exit_code = exit_code
        self.info.signal = sig
        self.info.ended_at = time.time()
        self._handle = None
        self._state_changed()

    # -- input and control -------------------------------------------------------------------

    def _live(self) -> tuple[AgentClient, ExecHandle]:
        if not self.running:
            raise GroveError(
                "shell_exited",
                f"shell {self.shell_id} has {self.info.state}",
                "open a new one with 'grove shell open SANDBOX'",
            )
        if self._handle is None or self._agent is None:
            raise GroveError(
                "shell_unavailable",
                f"shell {self.shell_id} is reconnecting to its sandbox",
                "retry in a moment",
            )
        return self._agent, self._handle

    async def write(self, data: bytes) -> None:
        _, handle = self._live()
        try:
            await handle.write_stdin(data)
        except AgentError as exc:
            raise _agent_error(self.shell_id, exc) from exc

    async def resize(self, rows: int, cols: int) -> None:
        _, handle = self._live()
        try:
            await handle.resize(rows, cols)
        except AgentError as exc:
            raise _agent_error(self.shell_id, exc) from exc
        if (rows, cols) != (self.info.rows, self.info.cols):
            self.info.rows, self.info.cols = rows, cols
            self._state_changed()

    async def signal(self, name: str) -> None:
        """Signal the terminal's foreground job, as typing ^C would (not just the shell)."""
        agent, handle = self._live()
        try:
            await agent.request(
                {"op": "pty_signal", "target_channel": handle.channel, "signal": name}
            )
        except AgentError as exc:
            if exc.code == "unknown_op":  # an older agent: the shell's own process group
                await handle.signal(name)
                return
            raise _agent_error(self.shell_id, exc) from exc

    async def hang_up(self, grace_s: float = 2.0) -> None:
        """End the shell like closing a terminal: HUP, then KILL if it lingers."""
        handle = self._handle
        if handle is None or not self.running:
            return
        for sig in ("HUP", "KILL"):
            with contextlib.suppress(AgentError):
                await handle.signal(sig)
            with contextlib.suppress(TimeoutError, AgentError):
                await asyncio.wait_for(handle.wait(), grace_s)
                return

    # -- viewers ---------------------------------------------------------------------------

    def add_viewer(self, replay: bool) -> Viewer:
        viewer = Viewer(self.scrollback.start if replay else self.scrollback.end, -1)
        self._viewers.add(viewer)
        return viewer

    def remove_viewer(self, viewer: Viewer) -> None:
        self._viewers.discard(viewer)
        self._progress.set()

    def advanced(self, viewer: Viewer, cursor: int) -> None:
        viewer.cursor = cursor
        viewer.progressed_at = time.monotonic()
        self._progress.set()

    async def changed(self, timeout: float | None = None) -> None:
        """Wait for new output or a state change (or the timeout)."""
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    def kick(self) -> None:
        """Wake every waiting viewer (one of them is leaving)."""
        self._wake()


def _agent_error(shell_id: str, exc: AgentError) -> GroveError:
    if exc.code in ("stdin_closed", "not_running", "no_such_session"):
        return GroveError(
            "shell_exited",
            f"shell {shell_id} has exited",
            "open a new one with 'grove shell open SANDBOX'",
        )
    return GroveError("shell_failed", f"shell {shell_id}: {exc}", "check 'grove logs SANDBOX'")
