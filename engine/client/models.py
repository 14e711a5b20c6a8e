"""What the engine answers, as frozen dataclasses: the SDK's types, free of protobuf.

Every field the wire leaves empty for "no datum" is None here, never 0 or "": a sandbox that
is not running has no pid, a metering sample the engine could not read has no bytes. `to_json`
is the dataclass as JSON, which is also what the CLI prints with --json.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


def _plain(value: Any) -> Any:
    if isinstance(value, Model):
        return value.to_json()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


class Model:
    """The JSON view shared by every model: field names as they are, bytes as text."""

    def to_json(self) -> dict[str, Any]:
        assert dataclasses.is_dataclass(self)
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


# engine and environments


@dataclass(frozen=True)
class EngineInfo(Model):
    pid: int
    socket: str
    accelerator: str
    accelerator_reason: str
    home: str
    version: str
    started_at: float
    sandboxes_running: int
    api_version: int
    #: What this engine accepts (dialogs and validation take their bounds from here).
    limits: Limits | None = None
    #: How sandboxes are networked: 'namespace' (each its own network namespace) or 'user'.
    network_backend: str | None = None
    #: The policy a sandbox gets when created without one, e.g. 'published'.
    network_default: str | None = None


@dataclass(frozen=True)
class Limits(Model):
    max_fork_replicas: int
    max_vcpus: int
    min_mem_mib: int
    max_mem_mib: int
    default_vcpus: int
    default_mem_mib: int
    #: One push's bytes and one read's (None: an engine that does not say).
    max_push_bytes: int | None = None
    max_read_bytes: int | None = None


@dataclass(frozen=True)
class Environment(Model):
    name: str
    description: str = ""
    cached: bool = False
    recipe_hash: str | None = None
    size_bytes: int | None = None
    created_at: float | None = None
    template_ready: bool = False
    kernel: str | None = None
    initramfs: str | None = None
    rootfs: str | None = None


@dataclass(frozen=True)
class PullProgress(Model):
    stage: str
    #: 0..1, or None while the stage cannot tell how far it is.
    fraction: float | None
    done: bool = False
    cache_hit: bool = False
    #: Set on the last update (done), the environment as pulled.
    environment: Environment | None = None


@dataclass(frozen=True)
class PruneResult(Model):
    bytes_freed: int
    removed: tuple[str, ...] = ()


# sandboxes and commands


@dataclass(frozen=True)
class Sandbox(Model):
    id: str
    name: str
    environment: str
    phase: str
    vcpus: int
    mem_mib: int
    pid: int | None = None
    parent_id: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    template_id: str | None = None
    error: str | None = None
    has_secrets: bool = False
    #: Engine-side time from request to a running guest (creates and fork children).
    create_ms: float | None = None
    #: Its network policy: off | published | egress | allow=HOST[:PORT],...
    network: str | None = None
    #: When the engine terminates it (unix time); None: never (no TTL).
    expires_at: float | None = None
    #: The names of its secrets (values never leave the engine).
    secret_names: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.name or self.id


@dataclass(frozen=True)
class NetworkInfo(Model):
    """What a sandbox may reach, and how it is wired (see grove.proto's NetworkInfo)."""

    sandbox_id: str
    #: off | published | egress | allow=HOST[:PORT],...
    policy: str
    #: 'namespace' (its own network namespace, TAP and firewall chain) or 'user'.
    backend: str
    #: The guest's own address (the same in every sandbox).
    guest_address: str | None = None
    #: Its network namespace, and the address its traffic comes from on the host (None in
    #: user mode).
    namespace: str | None = None
    host_address: str | None = None
    #: allow= names as the engine pinned them, "name=address" each.
    pinned: tuple[str, ...] = ()
    #: Bytes the sandbox received and sent; None: no datum (user mode, or not running).
    rx_bytes: int | None = None
    tx_bytes: int | None = None
    #: How long the policy change took to apply, engine side (set after a change).
    applied_ms: float | None = None


@dataclass(frozen=True)
class ExecExit(Model):
    #: -1 when a signal ended the command (then `signal` names it).
    exit_code: int
    signal: str | None = None
    timed_out: bool = False
    duration_ms: float = 0.0
    #: Set when the command failed and its sandbox's network policy blocked traffic meanwhile.
    network_note: str | None = None


@dataclass(frozen=True)
class ExecOutput(Model):
    """One piece of a running command's output."""

    stream: Literal["stdout", "stderr"]
    data: bytes


@dataclass(frozen=True)
class ExecResult(Model):
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    duration_ms: float = 0.0
    signal: str | None = None
    timed_out: bool = False
    network_note: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


@dataclass(frozen=True)
class Event(Model):
    seq: int
    sandbox_id: str
    ts: float
    kind: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InventoryUpdate(Model):
    """One message of the engine's inventory watch: every sandbox's lifecycle on one stream.

    The first update of a watch is `full`: every listed sandbox, environment and the lineage
    forest as they are now, plus the events after the cursor the watch was opened with. Later
    ones carry the events since the previous update, the sandboxes those events name as they
    are after them, the ids no longer listed (terminated), and the lineage forest and
    environments again whenever they changed. `cursor` is the newest event seq the engine knows:
    pass it as `after` to resume after a reconnect without losing or repeating an event.
    """

    cursor: int
    full: bool
    sandboxes: tuple[Sandbox, ...] = ()
    removed: tuple[str, ...] = ()
    events: tuple[Event, ...] = ()
    #: None: unchanged since the previous update (always present when full).
    environments: tuple[Environment, ...] | None = None
    lineage: tuple[LineageNode, ...] | None = None


# fork, snapshots, lineage, diff


@dataclass(frozen=True)
class ForkResult(Model):
    source: str
    snapshot: str
    children: tuple[Sandbox, ...]
    paused_ms: float
    memory: str = ""  # the layout the fork used: "delta" or "full" (README: How fork works)


@dataclass(frozen=True)
class Snapshot(Model):
    name: str
    id: str
    source: str | None = None
    created_at: float = 0.0
    dependents: tuple[str, ...] = ()
    environment: str | None = None
    #: The secrets its memory holds: sandboxes created from it get them.
    secret_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class LineageNode(Model):
    id: str
    kind: Literal["environment", "snapshot", "sandbox"] | str
    name: str
    phase: str | None = None
    created_at: float | None = None
    children: tuple[LineageNode, ...] = ()

    def walk(self) -> list[LineageNode]:
        """This node and every node under it, parents first."""
        nodes = [self]
        for child in self.children:
            nodes.extend(child.walk())
        return nodes


@dataclass(frozen=True)
class FileChange(Model):
    path: str
    change: Literal["added", "modified", "deleted"] | str
    kind: str
    old_sha256: str | None = None
    new_sha256: str | None = None
    old_size: int | None = None
    new_size: int | None = None
    #: Unified diff of a small text file; None otherwise.
    patch: str | None = None


@dataclass(frozen=True)
class Diff(Model):
    sandbox: str
    against: str
    changes: tuple[FileChange, ...] = ()


# files


@dataclass(frozen=True)
class FileEntry(Model):
    path: str
    type: Literal["file", "directory", "symlink", "other"] | str
    size: int
    mode: int
    mtime: float
    #: Symlinks only; None otherwise.
    link_target: str | None = None


@dataclass(frozen=True)
class FileRead(Model):
    path: str
    data: bytes
    #: The whole file's size; data holds its first len(data) bytes.
    size: int
    truncated: bool
    mode: int
    mtime: float


@dataclass(frozen=True)
class TransferProgress(Model):
    """A push, pull or export under way: bytes moved of the total (None: not known yet)."""

    stage: str  # planning | sending | receiving | converting | verifying | done
    done_bytes: int = 0
    total_bytes: int | None = None
    files: int | None = None


@dataclass(frozen=True)
class PushResult(Model):
    sandbox: str
    source: str
    dest: str
    bytes: int
    files: int
    directories: int
    duration_ms: float
    #: Entries left out by --exclude or .gitignore.
    excluded: int = 0


@dataclass(frozen=True)
class PullResult(Model):
    sandbox: str
    path: str
    output: str
    type: str  # file | directory | tar
    bytes: int
    files: int
    duration_ms: float


@dataclass(frozen=True)
class PatchResult(Model):
    sandbox: str
    added: tuple[str, ...] = ()
    modified: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    dry_run: bool = False

    @property
    def total(self) -> int:
        return len(self.added) + len(self.modified) + len(self.deleted)


@dataclass(frozen=True)
class ExportResult(Model):
    target: str
    output: str
    format: str
    bytes: int
    virtual_size: int
    duration_ms: float


# metering: None is "no datum", shown as '-', never 0


@dataclass(frozen=True)
class SandboxMeter(Model):
    id: str
    name: str
    phase: str
    template_id: str | None = None
    sampled_at: float | None = None
    unique_mem_bytes: int | None = None
    shared_mem_bytes: int | None = None
    vmm_overhead_bytes: int | None = None
    unique_disk_bytes: int | None = None
    shared_disk_bytes: int | None = None
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    guest_mem_used_bytes: int | None = None
    #: Bytes it received and sent since its VM started (None: no datum, e.g. user mode).
    net_rx_bytes: int | None = None
    net_tx_bytes: int | None = None


@dataclass(frozen=True)
class HostMeter(Model):
    sandboxes_running: int = 0
    naive_mem_bytes: int | None = None
    cow_aware_mem_bytes: int | None = None
    saved_mem_bytes: int | None = None
    naive_guest_mem_bytes: int | None = None
    cow_aware_guest_mem_bytes: int | None = None
    template_mem_bytes: int | None = None
    naive_disk_bytes: int | None = None
    cow_aware_disk_bytes: int | None = None
    saved_disk_bytes: int | None = None
    cpu_percent: float | None = None
    cpu_count: int | None = None
    mem_total_bytes: int | None = None
    mem_available_bytes: int | None = None


@dataclass(frozen=True)
class MeterSample(Model):
    sampled_at: float | None
    interval_s: float | None
    sandboxes: tuple[SandboxMeter, ...] = ()
    host: HostMeter = field(default_factory=HostMeter)


@dataclass(frozen=True)
class MeterHistory(Model):
    sandbox_id: str
    interval_s: float | None
    samples: tuple[SandboxMeter, ...] = ()


# shells


@dataclass(frozen=True)
class Shell(Model):
    sandbox_id: str
    shell_id: str
    state: Literal["running", "exited", "lost"] | str
    cols: int = 80
    rows: int = 24
    pid: int | None = None
    argv: tuple[str, ...] = ()
    cwd: str | None = None
    created_at: float = 0.0
    exit_code: int | None = None
    signal: str | None = None
    viewers: int = 0
    #: Bytes of output so far: the next read position.
    cursor: int = 0

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class ShellExit(Model):
    exit_code: int | None
    signal: str | None
    state: str


@dataclass(frozen=True)
class ShellRead(Model):
    output: str
    #: Where `output` really begins (later than asked if older output was dropped).
    cursor: int
    next_cursor: int
    truncated: bool
    state: str


# services


@dataclass(frozen=True)
class PublishedPort(Model):
    host: str
    host_port: int
    guest_port: int


@dataclass(frozen=True)
class Service(Model):
    sandbox_id: str
    name: str
    state: Literal["starting", "running", "backoff", "exited", "failed", "stopped"] | str
    pid: int | None = None
    ready: bool = False
    published_ports: tuple[PublishedPort, ...] = ()
    restarts: int = 0
    restart: str = "no"
    exit_code: int | None = None
    signal: str | None = None
    error: str | None = None
    started_at: float | None = None
    ready_at: float | None = None
    ready_ms: float | None = None
    argv: tuple[str, ...] = ()
    cwd: str | None = None
    #: kind:target of the readiness probe; None without one.
    probe: str | None = None

    @property
    def active(self) -> bool:
        return self.state in ("starting", "running", "backoff")


@dataclass(frozen=True)
class LogLine(Model):
    ts: float
    stream: Literal["stdout", "stderr", "grove"] | str
    text: str
