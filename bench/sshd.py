"""A throwaway OpenSSH server (Debian's openssh-server) on 127.0.0.1 for remote-engine tests
and benchmarks: a random port, its own host key, one authorized key, and a client HOME whose
~/.ssh trusts it. Nothing of the caller's own ~/.ssh is read or written."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

SSHD = "/usr/sbin/sshd"
#: The grove command the far side runs (this checkout's, not on sshd's PATH).
GROVE = str(Path(sys.executable).parent / "grove")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "grove-test",
                    "-f", str(path)], check=True)  # fmt: skip
    return path.with_suffix(".pub").read_text().strip()


@dataclass
class Sshd:
    root: Path
    port: int
    #: HOME for the client side: ~/.ssh holds its key and a known_hosts that trusts the server.
    home: Path
    host_key: str
    forwarding: bool
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def start(cls, forwarding: bool = True) -> Sshd:
        if not os.path.exists(SSHD):
            raise RuntimeError(f"{SSHD} is missing: install openssh-server (.ci/install does)")
        root = Path(tempfile.mkdtemp(prefix="gs"))
        home = root / "home"
        (home / ".ssh").mkdir(parents=True, mode=0o700)
        host_key = keygen(root / "host_key")
        client_key = keygen(home / ".ssh" / "id_ed25519")
        (root / "authorized_keys").write_text(client_key + "\n")
        port = _free_port()
        config = root / "sshd_config"
        config.write_text("\n".join([
            f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {root / 'host_key'}",
            f"PidFile {root / 'sshd.pid'}", f"AuthorizedKeysFile {root / 'authorized_keys'}",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no",
            # sshd only honours an open of a forwarded socket when local TCP forwarding is
            # allowed too (its permit-all flag covers both).
            f"AllowStreamLocalForwarding {'local' if forwarding else 'no'}",
            f"AllowTcpForwarding {'local' if forwarding else 'no'}",
            "X11Forwarding no", "LogLevel VERBOSE",
        ]) + "\n")  # fmt: skip
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
        server = cls(root, port, home, host_key, forwarding)
        server.trust(host_key)
        log = open(root / "sshd.log", "wb")  # noqa: SIM115 - lives as long as the server
        server.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log,
                                       stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return server
            if server.proc.poll() is not None:
                break
            time.sleep(0.05)
        server.stop()
        raise RuntimeError(f"sshd did not start: {(root / 'sshd.log').read_text()[-2000:]}")

    def trust(self, key: str) -> None:
        """Make the client's known_hosts hold key (and only it) for this server."""
        kind, blob = key.split()[:2]
        (self.home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {kind} {blob}\n")

    def url(self, grove_home: Path, grove: str) -> str:
        return f"ssh://root@127.0.0.1:{self.port}{grove_home}/engine.sock?grove={grove}"

    def client_env(self, base: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in base.items() if k != "SSH_AUTH_SOCK"}
        env["HOME"] = str(self.home)
        return env

    def drop_sessions(self) -> None:
        """Cut every SSH connection the server holds, as a network failure would (the
        server itself keeps listening)."""
        assert self.proc is not None
        for session in psutil.Process(self.proc.pid).children(recursive=True):
            session.kill()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Sessions sshd forked for the tests (their children are the remote engine's
        # detached daemon, which the engine's own teardown stops).
        shutil.rmtree(self.root, ignore_errors=True)
