"""Engine state in SQLite (WAL): every change is committed before the engine acts on it."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.store.records import EventRecord, SandboxRecord, TemplateRecord

SCHEMA_VERSION = 5

# Schema 2: typed sandbox fields that schema 1 kept in the JSON column `extra`.
_SANDBOX_FIELDS_V2 = {
    "origin": "TEXT",
    "disk_base": "TEXT",
    "boot": "TEXT NOT NULL DEFAULT '{}'",
    "image_hash": "TEXT NOT NULL DEFAULT ''",
    "create_ms": "REAL NOT NULL DEFAULT 0",
    "reset_to": "TEXT",
    # Schema 3: the sandbox's network policy (engine.net.policy), as text.
    "network": "TEXT NOT NULL DEFAULT 'published'",
    # Schema 5: when the reaper terminates it (unix time; NULL: never), and its secrets'
    # names with salted hashes (engine.secrets.vault; values never enter the database).
    "expires_at": "REAL",
    "secret_digests": "TEXT NOT NULL DEFAULT '{}'",
}

# Schema 4: a delta snapshot maps another template's memory file (TemplateRecord.mem_base).
_TEMPLATE_FIELDS_V4 = {
    "mem_base": "TEXT",
    # Schema 5: the secrets a snapshot's memory holds (names with salted hashes).
    "secret_digests": "TEXT NOT NULL DEFAULT '{}'",
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS templates (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    environment TEXT NOT NULL,
    image_hash TEXT NOT NULL,
    vcpus INTEGER NOT NULL,
    mem_mib INTEGER NOT NULL,
    phase TEXT NOT NULL,
    mem_path TEXT NOT NULL,
    state_path TEXT NOT NULL,
    disk_path TEXT NOT NULL,
    parent_id TEXT,
    source_sandbox TEXT,
    name TEXT,
    boot TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    mem_base TEXT,
    secret_digests TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS sandboxes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    environment TEXT NOT NULL,
    template_id TEXT,
    parent_id TEXT,
    phase TEXT NOT NULL,
    vcpus INTEGER NOT NULL,
    mem_mib INTEGER NOT NULL,
    pid INTEGER,
    pid_start INTEGER,
    mem_path TEXT NOT NULL DEFAULT '',
    disk_path TEXT NOT NULL DEFAULT '',
    secrets INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    extra TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    origin TEXT,
    disk_base TEXT,
    boot TEXT NOT NULL DEFAULT '{}',
    image_hash TEXT NOT NULL DEFAULT '',
    create_ms REAL NOT NULL DEFAULT 0,
    reset_to TEXT,
    network TEXT NOT NULL DEFAULT 'published',
    expires_at REAL,
    secret_digests TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS sandboxes_phase ON sandboxes(phase);
-- Names are unique among sandboxes that exist; a terminated one frees its name.
CREATE UNIQUE INDEX IF NOT EXISTS sandboxes_live_name ON sandboxes(name)
    WHERE phase != 'terminated';
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    sandbox_id TEXT NOT NULL,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_sandbox ON events(sandbox_id, seq);
-- Network slots (engine.net.slots): one per network namespace this engine made, written
-- before the namespace exists so a crash at any point leaves a row naming what to remove.
CREATE TABLE IF NOT EXISTS net_slots (
    slot INTEGER PRIMARY KEY,
    owner TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    -- Ports published into the namespace ([host, host_port, guest_port] each): the engine's
    -- proxies for them listen again after a restart.
    published TEXT NOT NULL DEFAULT '[]'
);
"""


class Store:
    """Thread-safe access to the engine database; one connection, serialized by a lock."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._db.executescript(_SCHEMA)  # commits on its own
        self._migrate()

    def _migrate(self) -> None:
        with self._tx() as db:
            have = {row["name"] for row in db.execute("PRAGMA table_info(sandboxes)")}
            for column, decl in _SANDBOX_FIELDS_V2.items():
                if column not in have:
                    db.execute(f"ALTER TABLE sandboxes ADD COLUMN {column} {decl}")
                    source = "json(json_extract(extra, '$.boot'))" if column == "boot" else (
                        f"json_extract(extra, '$.{column}')"
                    )  # fmt: skip
                    db.execute(
                        f"UPDATE sandboxes SET {column} = {source} "
                        f"WHERE json_extract(extra, '$.{column}') IS NOT NULL"
                    )
            have = {row["name"] for row in db.execute("PRAGMA table_info(templates)")}
            for column, decl in _TEMPLATE_FIELDS_V4.items():
                if column not in have:
                    db.execute(f"ALTER TABLE templates ADD COLUMN {column} {decl}")
            db.execute(
                "INSERT INTO meta(key, value) VALUES('schema', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute(sql, args).fetchall())

    # sandboxes

    def insert_sandbox(self, record: SandboxRecord) -> None:
        row = record.to_row()
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._tx() as db:
            db.execute(f"INSERT INTO sandboxes({cols}) VALUES({marks})", tuple(row.values()))

    def update_sandbox(self, sandbox_id: str, **fields: Any) -> None:
        fields["updated_at"] = time.time()
        if "boot" in fields and not isinstance(fields["boot"], str):
            fields["boot"] = json.dumps(fields["boot"])
        if "secret_digests" in fields:
            fields["secret_digests"] = json.dumps(fields["secret_digests"])
        if "phase" in fields:
            fields["phase"] = str(fields["phase"])
        assigns = ", ".join(f"{key} = ?" for key in fields)
        with self._tx() as db:
            db.execute(
                f"UPDATE sandboxes SET {assigns} WHERE id = ?", (*fields.values(), sandbox_id)
            )

    def delete_sandbox(self, sandbox_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM sandboxes WHERE id = ?", (sandbox_id,))

    def get_sandbox(self, sandbox_id: str) -> SandboxRecord | None:
        rows = self._query("SELECT * FROM sandboxes WHERE id = ?", (sandbox_id,))
        return SandboxRecord.from_row(rows[0]) if rows else None

    def find_sandbox(self, ref: str) -> SandboxRecord | None:
        """By exact id, exact name, or a unique id prefix."""
        rows = self._query(
            "SELECT * FROM sandboxes WHERE id = ? OR name = ? "
            "ORDER BY id = ? DESC, phase = 'terminated', created_at DESC LIMIT 1",
            (ref, ref, ref),
        )
        if not rows and len(ref) >= 4:
            rows = self._query("SELECT * FROM sandboxes WHERE id LIKE ?", (ref + "%",))
            if len(rows) > 1:
                rows = []
        return SandboxRecord.from_row(rows[0]) if rows else None

    def list_sandboxes(self, include_terminated: bool = False) -> list[SandboxRecord]:
        sql = "SELECT * FROM sandboxes"
        if not include_terminated:
            sql += " WHERE phase != 'terminated'"
        return [SandboxRecord.from_row(r) for r in self._query(sql + " ORDER BY created_at, id")]

    def name_taken(self, name: str) -> bool:
        return bool(
            self._query("SELECT 1 FROM sandboxes WHERE name = ? AND phase != 'terminated'", (name,))
        )

    # templates

    def insert_template(self, record: TemplateRecord) -> None:
        row = record.to_row()
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._tx() as db:
            db.execute(f"INSERT INTO templates({cols}) VALUES({marks})", tuple(row.values()))

    def update_template(self, template_id: str, **fields: Any) -> None:
        if "secret_digests" in fields:
            fields["secret_digests"] = json.dumps(fields["secret_digests"])
        if "phase" in fields:
            fields["phase"] = str(fields["phase"])
        assigns = ", ".join(f"{key} = ?" for key in fields)
        with self._tx() as db:
            db.execute(
                f"UPDATE templates SET {assigns} WHERE id = ?", (*fields.values(), template_id)
            )

    def delete_template(self, template_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM templates WHERE id = ?", (template_id,))

    def get_template(self, template_id: str) -> TemplateRecord | None:
        rows = self._query("SELECT * FROM templates WHERE id = ?", (template_id,))
        return TemplateRecord.from_row(rows[0]) if rows else None

    def list_templates(self) -> list[TemplateRecord]:
        return [
            TemplateRecord.from_row(r)
            for r in self._query("SELECT * FROM templates ORDER BY created_at")
        ]

    # network slots

    def claim_net_slot(self, owner: str, taken: set[int], limit: int) -> int:
        """The lowest slot this store does not hold and the host does not use (taken), now
        recorded for owner; one transaction, so two claims never get the same slot."""
        with self._tx() as db:
            held = {int(r["slot"]) for r in db.execute("SELECT slot FROM net_slots")}
            for slot in range(limit):
                if slot not in held and slot not in taken:
                    db.execute(
                        "INSERT INTO net_slots(slot, owner, created_at) VALUES(?, ?, ?)",
                        (slot, owner, time.time()),
                    )
                    return slot
        raise LookupError(f"all {limit} network slots are in use")

    def net_published(self, slot: int) -> list[list[Any]]:
        rows = self._query("SELECT published FROM net_slots WHERE slot = ?", (slot,))
        return list(json.loads(rows[0]["published"])) if rows else []

    def set_net_published(self, slot: int, published: list[list[Any]]) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE net_slots SET published = ? WHERE slot = ?", (json.dumps(published), slot)
            )

    def net_slots(self) -> dict[str, int]:
        """owner -> slot, for every slot this store holds."""
        return {str(r["owner"]): int(r["slot"]) for r in self._query("SELECT * FROM net_slots")}

    def move_net_slot(self, old_owner: str, new_owner: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE net_slots SET owner = ? WHERE owner = ?", (new_owner, old_owner))

    def free_net_slot(self, slot: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM net_slots WHERE slot = ?", (slot,))

    # events

    def add_event(self, sandbox_id: str, kind: str, detail: dict[str, Any] | None = None) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO events(sandbox_id, ts, kind, detail) VALUES(?, ?, ?, ?)",
                (sandbox_id, time.time(), kind, json.dumps(detail or {})),
            )
            return int(cur.lastrowid or 0)

    def events(self, sandbox_id: str, after: int = 0, limit: int = 1000) -> list[EventRecord]:
        rows = self._query(
            "SELECT * FROM events WHERE sandbox_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (sandbox_id, after, limit),
        )
        return [EventRecord.from_row(r) for r in rows]

    def events_since(self, after: int = 0, limit: int = 1000) -> list[EventRecord]:
        """Every sandbox's events after seq `after`, oldest first, at most `limit`."""
        rows = self._query(
            "SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        )
        return [EventRecord.from_row(r) for r in rows]

    def newest_events(self, limit: int) -> list[EventRecord]:
        """The last `limit` events of every sandbox, oldest first."""
        rows = self._query(
            "SELECT * FROM (SELECT * FROM events ORDER BY seq DESC LIMIT ?) ORDER BY seq", (limit,)
        )
        return [EventRecord.from_row(r) for r in rows]

    def last_event_seq(self) -> int:
        """The newest event's seq; 0 before the first."""
        rows = self._query("SELECT COALESCE(MAX(seq), 0) AS seq FROM events")
        return int(rows[0]["seq"])
