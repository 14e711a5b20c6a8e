"""Plain data the dashboard shows: what every gateway returns, free of gRPC and Textual types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EngineInfo:
    pid: int
    accelerator: str
    accelerator_reason: str
    home: str
    version: str
    started_at: float
    sandboxes_running: int
    #: The host the engine runs on; None where the gateway cannot tell.
    host_cpus: int | None = None
    host_mem_bytes: int | None = None
    limits: Limits | None = None


@dataclass(frozen=True)
class Limits:
    """What the engine accepts: dialogs take their bounds from here, not from a constant."""

    max_fork_replicas: int = 64
    max_vcpus: int = 16
    min_mem_mib: int = 128
    max_mem_mib: int = 65536
    default_vcpus: int = 1
    default_mem_mib: int = 512


@dataclass(frozen=True)
class EnvironmentInfo:
    name: str
    description: str = ""
    cached: bool = False
    template_ready: bool = False
    size_bytes: int | None = None


@dataclass(frozen=True)
class SandboxInfo:
    id: str
    name: str
    environment: str
    phase: str
    vcpus: int = 1
    mem_mib: int = 512
    pid: int | None = None
    created_at: float = 0.0
    parent_id: str = ""
    template_id: str = ""
    error: str = ""
    has_secrets: bool = False
    #: Its network policy: off | published | egress | allow=...; "" when the engine says none.
    network: str = ""
    #: When the engine's reaper terminates it (unix time); None: never (no TTL).
    expires_at: float | None = None

    @property
    def label(self) -> str:
        return self.name or self.id


@dataclass(frozen=True)
class NetworkInfo:
    """A sandbox's network as the engine reports it (after a change: the new policy)."""

    sandbox_id: str
    policy: str
    backend: str = ""
    rx_bytes: int | None = None
    tx_bytes: int | None = None
    #: How long the change took to apply, engine side; None when nothing was changed.
    applied_ms: float | None = None


@dataclass(frozen=True)
class HostRow:
    """What a host's row in the tree says: its connection, accelerator, sandboxes, memory."""

    name: str
    link: str  # connecting | connected | reconnecting | unreachable
    error: str = ""
    accelerator: str = ""
    sandboxes: int = 0
    running: int = 0
    mem_cow: int | None = None


@dataclass(frozen=True)
class LineageNode:
    """One node of the lineage tree: a host, an environment, a frozen snapshot, or a sandbox."""

    id: str
    kind: str  # "host" | "environment" | "snapshot" | "sandbox"
    label: str
    parent_id: str = ""
    phase: str = ""
    sandbox: SandboxInfo | None = None
    host: HostRow | None = None


@dataclass(frozen=True)
class SandboxMeter:
    """One sandbox's footprint. None means the engine has no datum: shown as '-', never 0."""

    sandbox_id: str
    unique_mem: int | None = None
    shared_mem: int | None = None
    vmm_overhead: int | None = None
    unique_disk: int | None = None
    shared_disk: int | None = None
    cpu_percent: float | None = None
    #: Bytes it received and sent since its VM started (None: no datum, e.g. user mode).
    net_rx: int | None = None
    net_tx: int | None = None
    #: When the engine took it (history samples); None on live samples, which share one time.
    sampled_at: float | None = None


@dataclass(frozen=True)
class HostTotals:
    """Host-wide totals: naive (sum of per-process RSS and disk sizes) vs CoW-aware."""

    mem_naive: int | None = None
    mem_cow: int | None = None
    #: What sharing saves (naive - CoW-aware), as the engine computed it.
    mem_saved: int | None = None
    #: Templates resident in RAM: counted once in CoW-aware, invisible to a sum of RSS.
    template_mem: int | None = None
    disk_naive: int | None = None
    disk_cow: int | None = None
    cpu_percent: float | None = None
    cpu_count: int | None = None
    mem_total: int | None = None


@dataclass(frozen=True)
class MeterSample:
    ts: float
    sandboxes: tuple[SandboxMeter, ...] = ()
    host: HostTotals = field(default_factory=HostTotals)


@dataclass(frozen=True)
class EventInfo:
    seq: int
    sandbox_id: str
    ts: float
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PullUpdate:
    stage: str
    fraction: float | None
    done: bool = False
    cache_hit: bool = False


@dataclass(frozen=True)
class TransferProgress:
    """A push or pull under way: bytes moved of the total (None: not known yet)."""

    stage: str  # planning | sending | receiving | verifying | done
    done: int = 0
    total: int | None = None
    files: int | None = None
    #: Seconds since the transfer began (None: not timed).
    elapsed: float | None = None


@dataclass(frozen=True)
class TransferResult:
    """A finished push (local source into the guest) or pull (guest source to local)."""

    direction: str  # push | pull
    source: str
    dest: str
    bytes: int
    files: int
    #: How long it took, in seconds (None: not timed).
    elapsed: float | None = None


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    duration_ms: float = 0.0


@dataclass(frozen=True)
class ShellInfo:
    """A guest shell the engine keeps; it outlives the dashboard that opened it."""

    sandbox_id: str
    shell_id: str
    state: str  # running | exited | lost
    argv: tuple[str, ...] = ()
    created_at: float = 0.0
    viewers: int = 0
    exit_code: int | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class ServiceInfo:
    sandbox_id: str
    name: str
    state: str  # starting | running | backoff | exited | failed | stopped
    ready: bool = False
    pid: int | None = None
    argv: tuple[str, ...] = ()
    probe: str = ""
    restarts: int = 0
    error: str = ""
    ports: tuple[str, ...] = ()  # "127.0.0.1:8080->80"

    @property
    def active(self) -> bool:
        return self.state in ("starting", "running", "backoff")


@dataclass(frozen=True)
class LogLine:
    ts: float
    stream: str  # stdout | stderr | grove
    text: str


@dataclass(frozen=True)
class InventoryChange:
    """One update of an engine's inventory watch (see the SDK's InventoryUpdate): `full` replaces
    everything known; otherwise `sandboxes` are upserted, `removed` dropped, and environments and
    lineage replaced when not None."""

    cursor: int
    full: bool
    sandboxes: tuple[SandboxInfo, ...] = ()
    removed: tuple[str, ...] = ()
    events: tuple[EventInfo, ...] = ()
    environments: tuple[EnvironmentInfo, ...] | None = None
    lineage: tuple[LineageNode, ...] | None = None
