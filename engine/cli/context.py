"""What every CLI handler gets: parsed args, the paths, and a lazily connected engine client."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from engine.client import Grove
from engine.config import Paths


@dataclass
class Context:
    args: argparse.Namespace
    paths: Paths
    _client: Grove | None = field(default=None, init=False)

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    @property
    def client(self) -> Grove:
        if self._client is None:
            self._client = Grove.connect(self.paths)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
