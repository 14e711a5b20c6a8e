"""A remote engine over SSH (asyncssh): its socket, brought to a private local socket.

Connecting uses the user's SSH config, agent and keys, and checks the host key against
known_hosts strictly. The remote engine is found (started on demand) by running
`grove engine status --json` there. gRPC then goes through a forwarded unix socket
(direct-streamlocal); where the server forbids that, each connection runs
`grove engine dial-stdio` on an exec channel instead, as `docker` does with ssh:// hosts.
The local socket's path never changes, so when the SSH connection drops the tunnel
reconnects with backoff and gRPC's own reconnect finds the engine again.
Every failure is a GroveError whose code names the stage, with a remedy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh

from engine.client.hosts import SshTarget
from engine.errors import GroveError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
#: A dead connection is noticed within KEEPALIVE_S * KEEPALIVE_COUNT (+ one interval).
KEEPALIVE_S = 1.5
KEEPALIVE_COUNT = 2
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 15.0
EXIT_NOT_RUNNING = 3  # `grove engine status` when no engine runs
EXIT_NOT_FOUND = 127  # the shell's "command not found"

StateCallback = Callable[[str, str], None]


def _known_hosts_has(target: SshTarget) -> bool:
    """Whether known_hosts already holds a key for this host (so a mismatch means changed)."""
    path = Path.home() / ".ssh" / "known_hosts"
    try:
        known = asyncssh.read_known_hosts(str(path))
    except (OSError, ValueError):
        return False
    keys = known.match(target.host, "", target.port or 22)
    return bool(keys[0] or keys[1])


def _stage_error(target: SshTarget, exc: BaseException) -> GroveError:
    where = target.label
    port = target.port or 22
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        if _known_hosts_has(target):
            return GroveError(
                "host_key_changed",
                f"the host key of {where} does not match known_hosts: it changed, or someone "
                "is in the way",
                f"if the change is expected: ssh-keygen -R '[{target.host}]:{port}' (or "
                f"{target.host}), then connect once with ssh to check and accept the new key",
            )
        return GroveError(
            "host_key_unknown",
            f"the host key of {where} is not in known_hosts",
            f"connect once with 'ssh -p {port} {target.user + '@' if target.user else ''}"
            f"{target.host}' and check the fingerprint, then retry",
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        return GroveError(
            "ssh_auth_failed",
            f"{where} refused every key offered (user {target.user or 'from ssh config'})",
            "add your public key to the remote ~/.ssh/authorized_keys, or load it into ssh-agent",
        )
    if isinstance(exc, asyncssh.Error):
        return GroveError(
            "host_unreachable", f"SSH to {where} failed: {exc}", "check 'ssh' to it works"
        )
    if isinstance(exc, TimeoutError):
        return GroveError(
            "host_unreachable",
            f"no SSH answer from {where} within {CONNECT_TIMEOUT:g} s",
            "check the host is up and its SSH port is reachable",
        )
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return GroveError(
        "host_unreachable",
        f"cannot reach {where}: {reason}",
        f"check the name and that SSH listens on port {port}",
    )


def remote_command(target: SshTarget, *args: str) -> str:
    home = target.remote_home
    env = f"GROVE_HOME={shlex.quote(home)} " if home else ""
    return env + " ".join(shlex.quote(a) for a in (target.grove, *args))


async def _pump(reader: Any, writer: Any) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncssh.Error, ConnectionError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.write_eof()


class SshTunnel:
    """Owns one SSH connection to a Grove host and the local socket that leads to its engine."""

    def __init__(self, target: SshTarget, on_state: StateCallback | None = None) -> None:
        self.target = target
        self.on_state = on_state or (lambda _state, _detail: None)
        self._dir = tempfile.mkdtemp(prefix="grove-ssh-")  # 0700: only this user reaches it
        self.socket = os.path.join(self._dir, "engine.sock")
        self.remote_socket = target.socket or ""
        self.mode = ""
        self.connect_ms = 0.0
        self._conn: asyncssh.SSHClientConnection | None = None
        self._listener: Any = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False

    @classmethod
    async def open(cls, target: SshTarget, on_state: StateCallback | None = None) -> SshTunnel:
        tunnel = cls(target, on_state)
        try:
            await tunnel._establish(discover=True)
        except BaseException:
            await tunnel.close()
            raise
        tunnel._supervisor = asyncio.create_task(tunnel._supervise(), name="ssh-tunnel")
        return tunnel

    async def _connect(self) -> asyncssh.SSHClientConnection:
        t = self.target
        try:
            return await asyncio.wait_for(
                asyncssh.connect(
                    t.host,
                    port=t.port or (),
                    username=t.user or (),
                    keepalive_interval=KEEPALIVE_S,
                    keepalive_count_max=KEEPALIVE_COUNT,
                ),
                CONNECT_TIMEOUT,
            )
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise _stage_error(t, exc) from None

    async def _establish(self, discover: bool) -> None:
        started = time.monotonic()
        conn = await self._connect()
        try:
            if discover or not self.remote_socket:
                self.remote_socket = await self._discover(conn)
            await self._serve(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self.connect_ms = (time.monotonic() - started) * 1000

    async def _discover(self, conn: asyncssh.SSHClientConnection) -> str:
        """The remote engine's socket, starting that engine if it is not running."""
        status = await conn.run(remote_command(self.target, "engine", "status", "--json"))
        if status.exit_status == EXIT_NOT_FOUND:
            raise GroveError(
                "grove_not_installed",
                f"'{self.target.grove}' is not found on {self.target.label}",
                "install Grove there (its README's set-up command), or add "
                "?grove=/path/to/grove to the host URL",
            )
        if status.exit_status == EXIT_NOT_RUNNING:
            self.on_state("starting", "starting the remote engine")
            status = await conn.run(remote_command(self.target, "engine", "start", "--json"))
            if status.exit_status != 0:
                detail = str(status.stderr or status.stdout).strip().splitlines()[-1:]
                raise GroveError(
                    "remote_engine_failed",
                    f"the engine on {self.target.label} did not start: {' '.join(detail)}",
                    f"run 'grove engine start' on {self.target.host} and see its engine log",
                )
        elif status.exit_status != 0:
            detail = str(status.stderr or status.stdout).strip().splitlines()[-1:]
            raise GroveError(
                "remote_engine_failed",
                f"'grove engine status' failed on {self.target.label}: {' '.join(detail)}",
                f"run 'grove doctor' on {self.target.host}",
            )
        try:
            info = json.loads(str(status.stdout))
            socket = str(info["socket"])
        except (ValueError, KeyError, TypeError):
            raise GroveError(
                "remote_engine_failed",
                f"{self.target.label} answered 'grove engine status' with something else",
                "run the same Grove version on both ends",
            ) from None
        return socket

    async def _serve(self, conn: asyncssh.SSHClientConnection) -> None:
        """Listen on the local socket; forward it, or bridge it through dial-stdio."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        try:
            _reader, writer = await conn.open_unix_connection(self.remote_socket)
            writer.close()
        except asyncssh.ChannelOpenError as exc:
            log.info("%s refuses socket forwarding (%s): using dial-stdio", self.target.label, exc)
            self._listener = await asyncio.start_unix_server(
                lambda r, w: self._bridge(conn, r, w), path=self.socket
            )
            self.mode = "dial-stdio"
        else:
            self._listener = await conn.forward_local_path(self.socket, self.remote_socket)
            self.mode = "forward"
        os.chmod(self.socket, 0o600)

    async def _bridge(
        self,
        conn: asyncssh.SSHClientConnection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """One gRPC connection over one exec channel running `grove engine dial-stdio`."""
        command = remote_command(self.target, "engine", "dial-stdio")
        try:
            process = await conn.create_process(command, encoding=None)
        except (OSError, asyncssh.Error):
            writer.close()
            return
        try:
            await asyncio.gather(_pump(reader, process.stdin), _pump(process.stdout, writer))
        except asyncio.CancelledError:
            pass  # the tunnel is closing
        finally:
            process.close()
            writer.close()

    async def _supervise(self) -> None:
        """Notice a dropped connection and bring it back on the same local socket."""
        delay = RECONNECT_FIRST_S
        while not self._closing:
            conn = self._conn
            if conn is not None:
                await conn.wait_closed()
                if self._closing:
                    return
                self._conn = None
                await self._stop_listening()
                self.on_state("lost", f"lost the connection to {self.target.label}")
            try:
                await self._establish(discover=False)
            except GroveError as exc:
                self.on_state("reconnecting", f"{exc.message}; retrying in {delay:.0f} s")
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            delay = RECONNECT_FIRST_S
            self.on_state("connected", f"reconnected to {self.target.label}")

    async def _stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            with contextlib.suppress(Exception):
                await listener.wait_closed()

    def drop(self) -> None:
        """End the SSH connection as a network failure would (tests, diagnostics)."""
        if self._conn is not None:
            self._conn.abort()

    async def close(self) -> None:
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
        await self._stop_listening()
        if self._conn is not None:
            self._conn.close()
            with contextlib.suppress(Exception):
                await self._conn.wait_closed()
            self._conn = None
        shutil.rmtree(self._dir, ignore_errors=True)
