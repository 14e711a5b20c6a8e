"""Typed rows of the engine database."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from engine.sandbox.phase import Phase


class TemplatePhase(StrEnum):
    BUILDING = "building"  # being booted or captured: nothing may restore from it yet
    READY = "ready"  # memory, state and disk frozen: restores may start
    LAYER = "layer"  # memory and state freed; only its frozen disk layer is still needed
    FAILED = "failed"  # an unfinished capture; its disk layer may still be under a sandbox


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
    # The template it was first restored from: where a plain reset goes back to.
    origin: str | None = None
    # The template whose frozen disk layer its own top layer sits on.
    disk_base: str | None = None
    # The kernel, initramfs and command line its guest was booted with (loader key, restarts).
    boot: dict[str, str] = field(default_factory=dict)
    image_hash: str = ""
    # How long the create (or the fork that made it) took, engine side.
    create_ms: float = 0.0
    # The template an unfinished reset restores (set with phase RESETTING).
    reset_to: str | None = None
    # Its network policy (engine.net.policy text): children inherit it unless given one.
    network: str = "published"
    # When the reaper terminates it (unix time); None: never.
    expires_at: float | None = None
    # Its secrets: name -> salted hash (engine.secrets.vault); the values are never here.
    secret_digests: dict[str, str] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["phase"] = str(self.phase)
        row["secrets"] = int(self.secrets)
        row["boot"] = json.dumps(self.boot)
        row["secret_digests"] = json.dumps(self.secret_digests)
        return row

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> SandboxRecord:
        data = dict(row)
        data.pop("extra", None)  # schema 1 kept these fields in one JSON column
        data["phase"] = Phase(data["phase"])
        data["secrets"] = bool(data["secrets"])
        data["boot"] = json.loads(data["boot"] or "{}")
        data["secret_digests"] = json.loads(data.get("secret_digests") or "{}")
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
    phase: TemplatePhase
    mem_path: str
    state_path: str
    disk_path: str
    created_at: float
    parent_id: str | None = None
    source_sandbox: str | None = None
    name: str | None = None
    boot: dict[str, str] = field(default_factory=dict)
    error: str = ""
    # A delta snapshot maps the memory file of the template with this id (its own state
    # holds only the pages that differ); None: mem_path is this template's own file.
    mem_base: str | None = None
    # The secrets a snapshot's memory holds (name -> salted hash); sandboxes from it get them.
    secret_digests: dict[str, str] = field(default_factory=dict)

    @property
    def memory_owner(self) -> str:
        """The id of the template whose memory file this one maps."""
        return self.mem_base or self.id

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["phase"] = str(self.phase)
        row["boot"] = json.dumps(self.boot)
        row["secret_digests"] = json.dumps(self.secret_digests)
        return row

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> TemplateRecord:
        data = dict(row)
        data["phase"] = TemplatePhase(data["phase"])
        data["boot"] = json.loads(data["boot"] or "{}")
        data["secret_digests"] = json.loads(data.get("secret_digests") or "{}")
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
