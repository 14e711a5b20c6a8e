"""What every CLI handler gets: parsed args, the paths, and a lazily connected engine client."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from engine.client import Grove
from engine.client.hosts import SshTarget, resolve
from engine.config import Paths
from engine.errors import GroveError

T = TypeVar("T")
REOPEN_FOR_S = 60.0


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

    def across_drops(self, open_stream: Callable[[], Iterator[T]]) -> Iterator[T]:
        """A following stream (top --watch, logs -f) that outlives a remote connection's drop:
        opened again once the tunnel is back (it reconnects on its own), for a minute."""
        while True:
            try:
                yield from open_stream()
                return
            except GroveError as exc:
                if self.target is None or exc.code != "engine_unreachable":
                    raise
                deadline = time.monotonic() + REOPEN_FOR_S
                while True:
                    time.sleep(1.0)
                    try:
                        self.client.status()
                        break
                    except GroveError:
                        if time.monotonic() > deadline:
                            raise exc from None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
