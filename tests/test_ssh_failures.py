"""SSH failures against an in-process asyncssh server on 127.0.0.1: each is one GroveError
whose code names the stage, with a remedy, and nothing is accepted silently. No VM: the
server never gets as far as running grove (tests/test_remote.py covers the way through)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from engine.client.hosts import parse_url
from engine.client.ssh import SshTunnel
from engine.errors import GroveError


@dataclass
class Server:
    port: int
    host_key: asyncssh.SSHKey
    client_key: asyncssh.SSHKey
    home: Path

    def trust(self, key: asyncssh.SSHKey) -> None:
        line = f"[127.0.0.1]:{self.port} {key.export_public_key().decode().strip()}\n"
        (self.home / ".ssh" / "known_hosts").write_text(line)

    def use_client_key(self, key: asyncssh.SSHKey) -> None:
        path = self.home / ".ssh" / "id_ed25519"
        path.write_bytes(key.export_private_key())
        path.chmod(0o600)


class _NoShell(asyncssh.SSHServer):
    """Authenticates by key only; the tests end before any session opens."""


@pytest.fixture
async def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Server]:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listener = await asyncssh.listen(
        "127.0.0.1", port, server_factory=_NoShell, server_host_keys=[host_key],
        authorized_client_keys=authorized,
    )  # fmt: skip
    (tmp_path / ".ssh").mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(tmp_path))  # the client's ~/.ssh is this one
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    srv = Server(port, host_key, client_key, tmp_path)
    srv.trust(host_key)
    srv.use_client_key(client_key)
    try:
        yield srv
    finally:
        listener.close()
        await listener.wait_closed()


async def _error(server: Server) -> GroveError:
    target = parse_url(f"ssh://tester@127.0.0.1:{server.port}")
    with pytest.raises(GroveError) as info:
        tunnel = await SshTunnel.open(target)
        await tunnel.close()
    error = info.value
    assert error.remedy and "\n" not in error.message
    return error


async def test_unknown_host_key_is_refused(server: Server) -> None:
    (server.home / ".ssh" / "known_hosts").unlink()
    error = await _error(server)
    assert error.code == "host_key_unknown" and "ssh -p" in error.remedy


async def test_changed_host_key_is_refused(server: Server) -> None:
    server.trust(asyncssh.generate_private_key("ssh-ed25519"))
    error = await _error(server)
    assert error.code == "host_key_changed" and "ssh-keygen -R" in error.remedy


async def test_wrong_client_key_is_refused(server: Server) -> None:
    server.use_client_key(asyncssh.generate_private_key("ssh-ed25519"))
    error = await _error(server)
    assert error.code == "ssh_auth_failed" and "authorized_keys" in error.remedy


async def test_a_server_that_hangs_up_is_unreachable(tmp_path: Path) -> None:
    async def hang_up(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.close()

    tcp = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    try:
        with pytest.raises(GroveError) as info:
            await SshTunnel.open(parse_url(f"ssh://tester@127.0.0.1:{port}"))
        assert info.value.code == "host_unreachable" and info.value.remedy
    finally:
        tcp.close()
        await tcp.wait_closed()
