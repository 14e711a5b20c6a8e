"""What one metering sample says about each sandbox and about the host.

None means "no datum" (the sandbox is not running, or its data could not be read): shown as
'-' and sent as JSON null or an unset proto field, never as 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class SandboxSample:
    id: str
    name: str
    phase: str
    sampled_at: float
    #: Guest pages this sandbox copied on write (or its own memory file): only it pays for them.
    unique_mem_bytes: int | None = None
    #: Resident template pages it maps; the host holds them once for every sibling.
    shared_mem_bytes: int | None = None
    #: The QEMU process's own memory outside guest RAM (anonymous + private file-backed).
    vmm_overhead_bytes: int | None = None
    #: Resident set of the QEMU process: what ps/top would charge it.
    rss_bytes: int | None = None
    #: Allocated bytes of its own qcow2 overlay.
    unique_disk_bytes: int | None = None
    #: Allocated bytes of the frozen layers beneath it, shared with every sandbox using them.
    shared_disk_bytes: int | None = None
    #: CPU time of its QEMU process over the last interval, percent of one core.
    cpu_percent: float | None = None
    #: The guest's own view (MemTotal - MemAvailable), from its agent every few seconds.
    guest_mem_used_bytes: int | None = None
    template_id: str | None = None
    #: Bytes it received and sent, from its host-side network device's counters (None: no
    #: device, as in user-mode networking, or not running).
    net_rx_bytes: int | None = None
    net_tx_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class HostSample:
    sampled_at: float
    sandboxes_running: int = 0
    #: Sum of every QEMU's RSS: shared template pages counted once per sandbox.
    naive_mem_bytes: int | None = None
    #: Unique + VMM overhead of every sandbox, plus each template's resident pages once.
    cow_aware_mem_bytes: int | None = None
    saved_mem_bytes: int | None = None
    #: The same two views limited to guest RAM (no VMM overhead).
    naive_guest_mem_bytes: int | None = None
    cow_aware_guest_mem_bytes: int | None = None
    #: Host RAM held by template memory files in use (each counted once).
    template_mem_bytes: int | None = None
    #: Every sandbox's overlay plus its whole backing chain, as if each had a full copy.
    naive_disk_bytes: int | None = None
    #: Every overlay plus each backing layer once.
    cow_aware_disk_bytes: int | None = None
    saved_disk_bytes: int | None = None
    cpu_percent: float | None = None
    cpu_count: int | None = None
    mem_total_bytes: int | None = None
    mem_available_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Reading:
    """One sample of every non-terminated sandbox and the host."""

    sampled_at: float
    sandboxes: tuple[SandboxSample, ...] = ()
    host: HostSample = field(default_factory=lambda: HostSample(0.0))
    #: How long the sample took to take (CPU of the sampling thread), for the sampler's own cost.
    cost_s: float = 0.0

    def by_id(self) -> dict[str, SandboxSample]:
        return {s.id: s for s in self.sandboxes}

    def key(self) -> frozenset[tuple[str, str]]:
        return frozenset((s.id, s.phase) for s in self.sandboxes)


#: Data fields of a sandbox's and the host's sample, in the order `grove top --json` shows them.
SANDBOX_FIELDS = (
    "unique_mem_bytes",
    "shared_mem_bytes",
    "vmm_overhead_bytes",
    "unique_disk_bytes",
    "shared_disk_bytes",
    "cpu_percent",
    "rss_bytes",
    "guest_mem_used_bytes",
    "net_rx_bytes",
    "net_tx_bytes",
)
HOST_FIELDS = (
    "naive_mem_bytes",
    "cow_aware_mem_bytes",
    "saved_mem_bytes",
    "naive_guest_mem_bytes",
    "cow_aware_guest_mem_bytes",
    "template_mem_bytes",
    "naive_disk_bytes",
    "cow_aware_disk_bytes",
    "saved_disk_bytes",
    "cpu_percent",
    "cpu_count",
    "mem_total_bytes",
    "mem_available_bytes",
)
