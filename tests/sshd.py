"""The remote-engine fixture: a second real engine behind bench.sshd's OpenSSH server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bench.sshd import GROVE, Sshd, keygen

__all__ = ["GROVE", "Remote", "keygen", "remote_engine"]


@dataclass
class Remote:
    """The client side (`local`: the CLI with HOME pointing at its ~/.ssh) and the far engine."""

    sshd: Sshd
    #: conftest.Grove objects (not imported here: tests/tui has a conftest of its own).
    far: Any
    local: Any

    @property
    def url(self) -> str:
        return self.sshd.url(self.far.home, GROVE)

    def cli(self, *args: str, timeout: float = 300) -> tuple[int, str, str]:
        result = self.local.run("--host", self.url, *args, timeout=timeout)
        return result.code, result.out, result.err

    def ok(self, *args: str, timeout: float = 300) -> str:
        code, out, err = self.cli(*args, timeout=timeout)
        assert code == 0, f"grove --host ... {' '.join(args)}: {err or out}"
        return out


def remote_engine(
    forwarding: bool, make_grove: Callable[[str], Any], teardown_grove: Callable[[Any], None]
) -> Iterator[Remote]:
    far = make_grove("gr")  # the remote engine's home; nothing runs there yet
    sshd = Sshd.start(forwarding=forwarding)
    # The client's own home holds no engine: every command must go through SSH.
    local = type(far)(far.home / "client", sshd.client_env(far.env))
    local.env.pop("GROVE_HOME")
    local.env["GROVE_HOME"] = str(far.home / "client-home")
    try:
        yield Remote(sshd, far, local)
    finally:
        sshd.stop()
        teardown_grove(far)
