"""Typed rows of the engine database."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.sandbox.phase import Phase


@dataclass
class SandboxRecord:
    id: str
    name: str
    environment: str
    phase: Phase
    vcpus: int
    mem_mib: int
    created_at: float
    updated_at: float
    template_id: str | None = None
    parent_id: str | None = None
    pid: int | None = None
    pid_start: int | None = None
    mem_path: str = ""
    disk_path: str = ""
    secrets: bool = False
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["phase"] = str(self.phase)
        row["secrets"] = int(self.secrets)
        row["extra"] = json.dumps(self.extra)
        return row

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> SandboxRecord:
        data = dict(row)
        data["phase"] = Phase(data["phase"])
        data["secrets"] = bool(data["secrets"])
        data["extra"] = json.loads(data["extra"] or "{}")
        return cls(**data)


@dataclass
class TemplateRecord:
    """A frozen memory image + device state + disk that sandboxes are restored from."""

    id: str
    kind: str  # "environment" | "snapshot"
    environment: str
    image_hash: str
    vcpus: int
    mem_mib: int
    phase: str  # "building" | "ready" | "failed"
    mem_path: str
    state_path: str
    disk_path: str
    created_at: float
    parent_id: str | None = None
    source_sandbox: str | None = None
    name: str | None = None
    boot: dict[str, str] = field(default_factory=dict)
    error: str = ""

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["boot"] = json.dumps(self.boot)
        return row

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> TemplateRecord:
        data = dict(row)
        data["boot"] = json.loads(data["boot"] or "{}")
        return cls(**data)


@dataclass
class EventRecord:
    seq: int
    sandbox_id: str
    ts: float
    kind: str
    detail: dict[str, Any]

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> EventRecord:
        data = dict(row)
        data["detail"] = json.loads(data["detail"] or "{}")
        return cls(**data)
