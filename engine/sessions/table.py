"""Persisted rows of the engine's guest sessions (shells, services, console read offsets).

One table keyed by (sandbox, kind, name) with a JSON body: each owner evolves its own fields
without schema migrations. It lives in the engine database beside the sandboxes, so an engine
restart finds every session it must re-attach.
"""

from __future__ import annotations

import json
import time
from typing import Any

from engine.store.db import Store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS guest_sessions (
    sandbox_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (sandbox_id, kind, name)
)
"""


class SessionTable:
    def __init__(self, store: Store) -> None:
        self._store = store
        # The store has no public DDL hook; its transaction helper keeps us serialized with it.
        with store._tx() as db:
            db.execute(_SCHEMA)

    def put(self, sandbox_id: str, kind: str, name: str, data: dict[str, Any]) -> None:
        with self._store._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO guest_sessions(sandbox_id, kind, name, data, updated_at)"
                " VALUES(?, ?, ?, ?, ?)",
                (sandbox_id, kind, name, json.dumps(data), time.time()),
            )

    def get(self, sandbox_id: str, kind: str, name: str) -> dict[str, Any] | None:
        rows = self._store._query(
            "SELECT data FROM guest_sessions WHERE sandbox_id = ? AND kind = ? AND name = ?",
            (sandbox_id, kind, name),
        )
        return _load(rows[0]["data"]) if rows else None

    def rows(self, sandbox_id: str, kind: str) -> list[dict[str, Any]]:
        rows = self._store._query(
            "SELECT data FROM guest_sessions WHERE sandbox_id = ? AND kind = ? ORDER BY name",
            (sandbox_id, kind),
        )
        return [_load(r["data"]) for r in rows]

    def all_rows(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        rows = self._store._query(
            "SELECT sandbox_id, data FROM guest_sessions WHERE kind = ? ORDER BY sandbox_id, name",
            (kind,),
        )
        return [(str(r["sandbox_id"]), _load(r["data"])) for r in rows]

    def delete(self, sandbox_id: str, kind: str, name: str) -> None:
        with self._store._tx() as db:
            db.execute(
                "DELETE FROM guest_sessions WHERE sandbox_id = ? AND kind = ? AND name = ?",
                (sandbox_id, kind, name),
            )


def _load(text: str) -> dict[str, Any]:
    value = json.loads(text)
    return value if isinstance(value, dict) else {}
