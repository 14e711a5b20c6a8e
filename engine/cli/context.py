"""What every CLI handler gets: parsed args, the paths, and a lazily connected engine client."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

from engine.client import Grove
from engine.client.hosts import SshTarget, resolve
from engine.config import Paths


def _report(state: str, detail: str) -> None:
    """A remote connection's drop and return, on stderr (stdout stays the command's)."""
    print(f"grove: {detail}", file=sys.stderr, flush=True)


@dataclass
class Context:
    args: argparse.Namespace
    paths: Paths
    _client: Grove | None = field(default=None, init=False)
    _target: SshTarget | None = field(default=None, init=False)
    _resolved: bool = field(default=False, init=False)

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    @property
    def target(self) -> SshTarget | None:
        """The remote engine of --host / GROVE_HOST / 'grove host use'; None: this host's."""
        if not self._resolved:
            self._target = resolve(getattr(self.args, "host", None))
            self._resolved = True
        return self._target

    @property
    def client(self) -> Grove:
        if self._client is None:
            target = self.target
            self._client = (
                Grove.connect(host=target, on_state=_report)
                if target is not None
                else Grove.connect(self.paths)
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
