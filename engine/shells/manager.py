"""Shells per sandbox: open, find, list, close; persisted, and re-bound when the agent changes.

Host-side objects (scrollback, pump, viewers) belong to one engine and one connection; the
guest session belongs to the VM. So the table is keyed by the guest session's channel: a new
connection (engine restart, restore) re-attaches the same channel, and a fork child, whose
agent lists the parent's sessions, gets copies of the parent's shells with their scrollback.
"""

from __future__ import annotations

import logging
import re
import secrets
import shlex
import time
from typing import Any

from engine.agent.client import AgentClient, AgentError, ExecHandle
from engine.agent.errors import spawn_error
from engine.config import Paths
from engine.errors import GroveError, invalid
from engine.sandbox.events import EventLog
from engine.sandbox.manager import Sandboxes
from engine.sandbox.phase import Phase
from engine.secrets.keeper import SecretKeeper
from engine.sessions.table import SessionTable
from engine.sessions.watch import SandboxWatch
from engine.shells.scrollback import Scrollback
from engine.shells.shell import EXITED, LOST, Shell, ShellInfo
from engine.store.records import SandboxRecord
from engine.vmm.vm import Vm

log = logging.getLogger(__name__)

KIND = "shell"
DEFAULT_SHELL = ("bash", "-l")
FALLBACK_SHELL = ("sh", "-l")
DEFAULT_TERM = "xterm-256color"
MAX_DIM = 9999
#: Ended shells kept per sandbox (for their scrollback and exit status) before the oldest go.
KEEP_ENDED = 16
_TERM = re.compile(r"^[A-Za-z0-9._+-]{1,64}$")


def validate_size(rows: int, cols: int) -> tuple[int, int]:
    rows, cols = rows or 24, cols or 80
    if not (0 < rows <= MAX_DIM and 0 < cols <= MAX_DIM):
        raise invalid(
            f"invalid terminal size {cols}x{rows}",
            f"pass --cols and --rows between 1 and {MAX_DIM}",
        )
    return rows, cols


class Shells:
    def __init__(
        self,
        paths: Paths,
        sandboxes: Sandboxes,
        table: SessionTable,
        events: EventLog,
        watch: SandboxWatch,
        secrets: SecretKeeper,
    ) -> None:
        self._secrets = secrets
        self._paths = paths
        self._sandboxes = sandboxes
        self._table = table
        self._events = events
        self._watch = watch
        self._shells: dict[str, dict[str, Shell]] = {}
        # Sandboxes already checked for shells inherited from the one they were restored from.
        self._considered: set[str] = set()
        watch.add_owner(self)

    # -- persistence -------------------------------------------------------------------------

    def recover(self) -> None:
        """Load the table after an engine start; the watch attaches what still runs."""
        for sandbox_id, data in self._table.all_rows(KIND):
            info = ShellInfo.from_dict(data)
            if self._store_phase(sandbox_id) in (None, Phase.TERMINATED):
                self._table.delete(sandbox_id, KIND, info.shell_id)  # nothing left to show
                continue
            # The bytes are gone with the old engine, not the offsets: cursors stay monotonic.
            ring = Scrollback.restore(int(info.extra.get("cursor", 0)), b"")
            self._shells.setdefault(sandbox_id, {})[info.shell_id] = Shell(
                info, self._save, self._secrets.redactor, ring
            )

    def _store_phase(self, sandbox_id: str) -> Phase | None:
        try:
            return self._sandboxes.get(sandbox_id).phase
        except GroveError:
            return None

    def _save(self, shell: Shell) -> None:
        shell.info.extra["cursor"] = shell.scrollback.end
        self._table.put(shell.info.sandbox_id, KIND, shell.shell_id, shell.info.to_dict())

    async def checkpoint(self, record: SandboxRecord) -> None:
        """Persist output offsets now and then, so a killed engine's successor continues
        them (readers' cursors must never point into the past)."""
        for shell in self._shells.get(record.id, {}).values():
            if shell.running and shell.info.extra.get("cursor") != shell.scrollback.end:
                self._save(shell)

    # -- lookup --------------------------------------------------------------------------------

    async def _live(self, ref: str) -> tuple[SandboxRecord, Vm, AgentClient]:
        record, vm = self._sandboxes.live_vm(ref)
        await self._watch.ensure(record.id)
        record, vm = self._sandboxes.live_vm(record.id)
        assert vm.agent is not None
        return record, vm, vm.agent

    def get(self, ref: str, shell_id: str) -> Shell:
        record = self._sandboxes.get(ref)
        if not shell_id:
            raise invalid("no shell id given", f"list shells with 'grove shell ls {record.id}'")
        shell = self._shells.get(record.id, {}).get(shell_id)
        if shell is None:
            raise GroveError(
                "shell_not_found",
                f"no shell '{shell_id}' in sandbox {record.id}",
                f"list shells with 'grove shell ls {record.id}'",
            )
        return shell

    async def find(self, ref: str, shell_id: str) -> Shell:
        """A shell, with its sandbox's current connection attached first."""
        record = self._sandboxes.get(ref)
        await self._watch.ensure(record.id)
        return self.get(record.id, shell_id)

    async def in_sandbox(self, ref: str) -> list[Shell]:
        record = self._sandboxes.get(ref)
        await self._watch.ensure(record.id)
        shells = self._shells.get(record.id, {}).values()
        return sorted(shells, key=lambda s: s.info.created_at)

    # -- open and close ----------------------------------------------------------------------

    async def open(
        self,
        ref: str,
        rows: int = 24,
        cols: int = 80,
        cwd: str = "",
        command: str = "",
        term: str = "",
        secret_env: list[str] | None = None,
    ) -> Shell:
        """secret_env: the secrets the shell gets as variables (NAME or NAME=VARIABLE)."""
        rows, cols = validate_size(rows, cols)
        term = term or DEFAULT_TERM
        if not _TERM.match(term):
            raise invalid(f"invalid TERM '{term[:64]}'", "use a terminfo name such as xterm")
        if command:
            try:
                argv = shlex.split(command)
            except ValueError as exc:
                raise invalid(f"cannot parse --shell: {exc}", "quote it as for sh") from None
            if not argv:
                raise invalid("empty --shell", "pass a command such as 'bash' or '/bin/sh'")
            choices = [argv]
        else:
            choices = [list(DEFAULT_SHELL), list(FALLBACK_SHELL)]
        record, _, agent = await self._live(ref)
        env = self._secrets.env(record.id, secret_env or []) or None
        argv, handle = await spawn_first(
            agent, choices, env=env, cwd=cwd, rows=rows, cols=cols, term=term
        )
        info = ShellInfo(
            shell_id=self._new_id(record.id),
            sandbox_id=record.id,
            channel=handle.channel,
            argv=argv,
            cwd=cwd,
            cols=cols,
            rows=rows,
            term=term,
            pid=handle.pid,
            created_at=time.time(),
        )
        shell = Shell(info, self._save, self._secrets.redactor)
        self._shells.setdefault(record.id, {})[info.shell_id] = shell
        shell.bind(agent, handle)
        self._save(shell)
        self._prune(record.id)
        await self._events.emit(record.id, "shell_opened", shell=info.shell_id, pid=info.pid)
        return shell

    def _new_id(self, sandbox_id: str) -> str:
        taken = self._shells.get(sandbox_id, {})
        while True:
            shell_id = "sh-" + secrets.token_hex(3)
            if shell_id not in taken:
                return shell_id

    async def close(self, ref: str, shell_id: str) -> Shell:
        shell = await self.find(ref, shell_id)
        sandbox_id = shell.info.sandbox_id
        await shell.hang_up()
        if shell.running:
            shell.finish(EXITED, None, "HUP")
        shell.unbind()
        shell.kick()
        self._shells.get(sandbox_id, {}).pop(shell_id, None)
        self._table.delete(sandbox_id, KIND, shell_id)
        await self._events.emit(
            sandbox_id, "shell_closed", shell=shell_id, exit_code=shell.info.exit_code
        )
        return shell

    def _prune(self, sandbox_id: str) -> None:
        ended = sorted(
            (s for s in self._shells.get(sandbox_id, {}).values() if not s.running),
            key=lambda s: s.info.ended_at or 0.0,
        )
        for shell in ended[: max(len(ended) - KEEP_ENDED, 0)]:
            self._shells[sandbox_id].pop(shell.shell_id, None)
            self._table.delete(sandbox_id, KIND, shell.shell_id)

    # -- the watch ---------------------------------------------------------------------------

    def active_sandboxes(self) -> set[str]:
        return {
            sid for sid, shells in self._shells.items() if any(s.running for s in shells.values())
        }

    async def agent_changed(self, record: SandboxRecord, vm: Vm, agent: AgentClient) -> None:
        assert agent.hello is not None
        listed = {s.channel: s for s in agent.hello.sessions if s.kind == "exec" and s.pty}
        mine = self._shells.get(record.id)
        if not mine and record.id not in self._considered:
            mine = self._inherit(record, set(listed))
        self._considered.add(record.id)
        mine = mine or {}
        for shell in list(mine.values()):
            if not shell.running:
                continue
            if shell.info.channel not in listed:
                shell.unbind()
                shell.finish(LOST)
                continue
            try:
                handle = await agent.attach(shell.info.channel)
            except AgentError as exc:
                log.warning("cannot re-attach shell %s: %s", shell.shell_id, exc)
                shell.unbind()
                shell.finish(LOST)
                continue
            shell.bind(agent, handle)
            self._save(shell)

    def _inherit(self, record: SandboxRecord, channels: set[int]) -> dict[str, Shell]:
        """A sandbox restored from another's memory runs that one's shells: copy them."""
        source = self._watch.source_of(record)
        mine = self._shells.setdefault(record.id, {})
        if source is None or not channels:
            return mine
        for parent in self._shells.get(source, {}).values():
            if parent.info.channel in channels and parent.running:
                self.adopt(record.id, parent)
        return mine

    def adopt(self, sandbox_id: str, parent: Shell) -> Shell:
        """A copy of another sandbox's shell (same guest session, new host-side objects)."""
        data = parent.info.to_dict()
        data["sandbox_id"] = sandbox_id
        data["extra"] = {**parent.info.extra, "forked_from": parent.info.sandbox_id}
        shell = Shell(
            ShellInfo.from_dict(data), self._save, self._secrets.redactor, parent.scrollback.copy()
        )
        self._shells.setdefault(sandbox_id, {})[shell.shell_id] = shell
        self._save(shell)
        return shell

    async def sandbox_gone(self, sandbox_id: str, record: SandboxRecord | None) -> None:
        for shell in self._shells.get(sandbox_id, {}).values():
            shell.unbind()
            shell.finish(LOST)

    async def shutdown(self) -> None:
        for shells in self._shells.values():
            for shell in shells.values():
                shell.unbind()
                shell.kick()


async def spawn_first(
    agent: AgentClient,
    choices: list[list[str]],
    env: dict[str, str] | None,
    cwd: str,
    rows: int,
    cols: int,
    term: str,
) -> tuple[list[str], ExecHandle]:
    """Start the first shell of choices the guest has (bash, else sh) on a new PTY."""
    for argv in choices:
        try:
            handle = await agent.exec(
                argv, env=env, cwd=cwd or None, pty=True, rows=rows, cols=cols, term=term
            )
            return argv, handle
        except AgentError as exc:
            if exc.code == "not_found" and argv is not choices[-1]:
                continue  # not in this image: try the next one
            raise _open_error(exc, argv, cwd) from exc
    raise invalid("no shell to start", "pass --shell CMD")


def describe(shell: Shell) -> dict[str, Any]:
    info = shell.info
    return {
        "shell_id": info.shell_id,
        "sandbox_id": info.sandbox_id,
        "state": info.state,
        "cols": info.cols,
        "rows": info.rows,
        "pid": info.pid,
        "argv": info.argv,
        "cwd": info.cwd,
        "created_at": info.created_at,
        "exit_code": info.exit_code,
        "signal": info.signal,
        "viewers": shell.viewers,
        "cursor": shell.scrollback.end,
    }


def _open_error(exc: AgentError, argv: list[str], cwd: str) -> GroveError:
    fallback = GroveError(
        "shell_failed", f"cannot start a shell: {exc}", "check 'grove logs SANDBOX'"
    )
    return spawn_error(
        exc, f"shell '{argv[0]}'", cwd, fallback,
        not_found_remedy="pass an installed one with --shell, e.g. --shell /bin/sh",
    )  # fmt: skip
