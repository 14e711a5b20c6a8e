"""What every CLI handler gets: parsed args, the paths, and a lazily connected engine client."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from engine.client import EngineClient
from engine.config import Paths


@dataclass
class Context:
    args: argparse.Namespace
    paths: Paths
    _client: EngineClient | None = field(default=None, init=False)

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    @property
    def client(self) -> EngineClient:
        if self._client is None:
            self._client = EngineClient(self.paths)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
