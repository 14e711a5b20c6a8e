"""Result shapes the MCP tools add to the SDK's models: text instead of bytes, bounded output,
and lists wrapped in an object (a tool's structured result is a JSON object).

Tools whose answer is one SDK model (Sandbox, ForkResult, Snapshot, Service, Shell, ...)
return that dataclass as it is; its fields are the result's.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from engine.client import models as m

Encoding = Literal["utf-8", "base64"]


class ExecOutcome(BaseModel):
    exit_code: int = Field(description="the command's exit code; -1 when a signal ended it")
    stdout: str = Field(description="its standard output (UTF-8, undecodable bytes replaced)")
    stderr: str = Field(description="its standard error")
    duration_ms: float
    signal: str | None = Field(None, description="the signal that ended it, if one did")
    timed_out: bool = Field(False, description="timeout_s ran out and the command was killed")
    network_note: str | None = Field(
        None, description="set when it failed while its network policy blocked traffic"
    )
    stdout_bytes: int = Field(description="bytes it wrote to stdout in all")
    stderr_bytes: int = Field(description="bytes it wrote to stderr in all")
    truncated: bool = Field(
        description="a stream was longer than max_output_bytes: only its last bytes are kept"
    )


class FileContent(BaseModel):
    path: str
    size: int = Field(description="the whole file's size in bytes")
    truncated: bool = Field(description="content holds only the first max_bytes")
    mode: int
    mtime: float
    content: str
    encoding: Encoding


class FileWritten(BaseModel):
    path: str
    bytes: int
    mode: str = Field(description="octal permission bits, e.g. '644'")


class SandboxList(BaseModel):
    sandboxes: list[m.Sandbox]


class SnapshotList(BaseModel):
    snapshots: list[m.Snapshot]


class ServiceList(BaseModel):
    services: list[m.Service]


class ShellList(BaseModel):
    shells: list[m.Shell]


class ServiceLog(BaseModel):
    sandbox: str
    service: str
    lines: list[m.LogLine]


class DiffResult(BaseModel):
    sandbox: str
    against: str
    changes: list[m.FileChange]
    total: int = Field(description="how many paths changed in all")
    truncated: bool = Field(description="more than max_changes changed: the first are listed")


class TreeFile(BaseModel):
    path: str = Field(description="relative to the pulled path")
    content: str
    encoding: Encoding
    size: int
    mode: str = Field(description="octal permission bits")


class TreePulled(BaseModel):
    sandbox: str
    path: str
    type: Literal["file", "directory"]
    files: list[TreeFile]
    bytes: int


class TreePushed(BaseModel):
    sandbox: str
    dest: str
    files: int
    bytes: int
    duration_ms: float
