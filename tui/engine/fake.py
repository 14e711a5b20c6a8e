"""FakeEngine: a deterministic, in-memory EngineGateway for snapshot tests and `--fake` demos.

One small family: environment debian:12; `web` (serving `http`) with two forks, one of which
has a fork of its own (and egress) that expires 4m12s after `now` (the only TTL); a stopped
sandbox cut off the network; and an orphan whose parent is gone. Numbers are fixed
formulas of the sample index, timestamps are offsets from a fixed `now`: two runs render the
same screen. `population=N` makes N sandboxes instead (a forest of forks), for benchmarks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import replace
from typing import Any

from engine.errors import GroveError, not_found
from engine.net import policy as net_policy
from tui.engine.gateway import OnProgress, ShellSession, derive_lineage, not_supported
from tui.models import (
    EngineInfo,
    EnvironmentInfo,
    EventInfo,
    ExecResult,
    HostTotals,
    InventoryChange,
    Limits,
    LineageNode,
    LogLine,
    MeterSample,
    NetworkInfo,
    PullUpdate,
    SandboxInfo,
    SandboxMeter,
    ServiceInfo,
    ShellInfo,
    TransferProgress,
    TransferResult,
)

FAKE_NOW = 1_795_000_000.0  # a fixed instant, so ages never change between runs
MiB = 1 << 20
HISTORY = 60

#: Feature names the fake can pretend not to have (as the real engine today).
ALL_FEATURES = frozenset(
    {
        "metering", "history", "lineage", "fork", "snapshot", "reset", "shell", "services",
        "network", "files",
    }
)  # fmt: skip
DEFAULT_FEATURES = frozenset(
    {"metering", "history", "fork", "reset", "shell", "services", "network", "files"}
)

#: What every fake push or pull reports: 3 files, 28.5 MiB in 3.1 s, in a fixed sequence
#: (12.0 MiB after 1.32 s: 9.1 MiB/s).
TRANSFER_BYTES = 29_884_416
TRANSFER_FILES = 3
TRANSFER_SECONDS = 3.1
TRANSFER_STEPS: tuple[TransferProgress, ...] = (
    TransferProgress("planning", elapsed=0.0),
    TransferProgress("sending", 0, TRANSFER_BYTES, TRANSFER_FILES, 0.05),
    TransferProgress("sending", 12_582_912, TRANSFER_BYTES, TRANSFER_FILES, 1.32),
    TransferProgress("sending", TRANSFER_BYTES, TRANSFER_BYTES, TRANSFER_FILES, 3.05),
    TransferProgress("done", TRANSFER_BYTES, TRANSFER_BYTES, TRANSFER_FILES, TRANSFER_SECONDS),
)


def _sandboxes(now: float) -> list[SandboxInfo]:
    base: dict[str, Any] = {"environment": "debian:12", "vcpus": 1, "mem_mib": 512}
    published: dict[str, Any] = {**base, "network": "published"}
    return [
        SandboxInfo(
            id="sb-1f3a9c20",
            name="web",
            phase="running",
            pid=41001,
            created_at=now - 7260,
            **published,
        ),
        SandboxInfo(
            id="sb-2b7e41d5",
            name="web-fork-1",
            phase="running",
            pid=41017,
            created_at=now - 1830,
            parent_id="sb-1f3a9c20",
            network="egress",
            **base,
        ),
        SandboxInfo(
            id="sb-3c0d5e6f",
            name="web-fork-2",
            phase="paused",
            pid=41018,
            created_at=now - 1829,
            parent_id="sb-1f3a9c20",
            **published,
        ),
        SandboxInfo(
            id="sb-4d91a2b3",
            name="web-fork-1a",
            phase="running",
            pid=41102,
            created_at=now - 245,
            parent_id="sb-2b7e41d5",
            expires_at=now + 252,  # relative to the fixed now: '4m12s' in every snapshot
            **published,
        ),
        SandboxInfo(
            id="sb-5e2c8f70",
            name="build",
            phase="stopped",
            created_at=now - 90061,
            network="off",
            **base,
        ),
        SandboxInfo(
            id="sb-6a4b1c9d",
            name="batch-7",
            phase="failed",
            created_at=now - 5400,
            parent_id="sb-0dead000",
            error="agent did not answer after restore",
            **published,
        ),
    ]


def _population_policy(i: int) -> str:
    """Mostly published; every seventh has egress, every thirteenth no network at all."""
    if i % 13 == 5:
        return "off"
    return "egress" if i % 7 == 3 else "published"


def _population(now: float, n: int, id_base: int = 0xC0000000) -> list[SandboxInfo]:
    """n sandboxes: every eighth a root, the rest forks of an earlier one (a deep forest)."""
    out: list[SandboxInfo] = []
    for i in range(n):
        parent = "" if i % 8 == 0 else out[(i * 7919) % i].id
        out.append(
            SandboxInfo(
                id=f"sb-{id_base + i:08x}",
                name=f"box-{i:03d}",
                environment="debian:12",
                phase="running",
                pid=50000 + i,
                created_at=now - 3600 + i * 5,
                parent_id=parent,
                network=_population_policy(i),
            )
        )
    return out


# Per sandbox: unique MiB at sample 0, its growth per sample, CPU baseline; None = no datum.
_PROFILE: dict[str, tuple[float, float, float] | None] = {
    "sb-1f3a9c20": (96.0, 0.40, 6.0),
    "sb-2b7e41d5": (2.1, 0.90, 18.0),
    "sb-3c0d5e6f": (2.3, 0.0, 0.0),
    "sb-4d91a2b3": (1.7, 0.35, 42.0),
}
_DISK: dict[str, int] = {
    "sb-1f3a9c20": 38 * MiB,
    "sb-2b7e41d5": 7 * MiB,
    "sb-3c0d5e6f": 192 * 1024,
    "sb-4d91a2b3": 3 * MiB,
    "sb-5e2c8f70": 212 * MiB,
    "sb-6a4b1c9d": 1 * MiB,
}
# Per sandbox: bytes received and sent at sample 0, and their growth per sample while running.
_NET: dict[str, tuple[int, int, int, int]] = {
    "sb-1f3a9c20": (2400 * 1024, 18 * 1024, 31 * MiB, 210 * 1024),  # serves http
    "sb-2b7e41d5": (96 * MiB, 512 * 1024, 3 * MiB, 24 * 1024),  # egress: downloads
    "sb-3c0d5e6f": (1200 * 1024, 0, 380 * 1024, 0),
    "sb-4d91a2b3": (24 * 1024, 300, 9 * 1024, 120),
}
_TEMPLATE_MEM = 74 * MiB  # resident template pages, charged once to the family
_TEMPLATE_DISK = 106 * MiB
_VMM = 34 * MiB
_WAVE = (0, 3, 7, 4, 1, 9, 5, 2, 8, 6)  # deterministic jitter


def _meter(sandbox: SandboxInfo, i: int) -> SandboxMeter:
    profile = _PROFILE.get(sandbox.id)
    disk = _DISK.get(sandbox.id, 256 * 1024)
    if sandbox.phase not in ("running", "paused"):
        return SandboxMeter(sandbox.id, unique_disk=disk, shared_disk=_TEMPLATE_DISK)
    if profile is None:  # created during a demo: modest, steady numbers
        profile = (1.9, 0.2, 3.0)
    unique_mib, growth, cpu = profile
    jitter = _WAVE[(i + len(sandbox.id)) % len(_WAVE)]
    running = sandbox.phase == "running"
    rx, rx_rate, tx, tx_rate = _NET.get(sandbox.id, (4096, 64, 2048, 32))
    if sandbox.network == "off":
        rx = rx_rate = tx = tx_rate = 0
    ticks = i if running else 0
    return SandboxMeter(
        sandbox_id=sandbox.id,
        unique_mem=int((unique_mib + growth * i + 0.1 * jitter) * MiB),
        shared_mem=_TEMPLATE_MEM,
        vmm_overhead=_VMM + jitter * 64 * 1024,
        unique_disk=disk,
        shared_disk=_TEMPLATE_DISK,
        cpu_percent=(cpu + jitter * cpu / 12) if running else 0.0,
        net_rx=rx + rx_rate * ticks,
        net_tx=tx + tx_rate * ticks,
    )


def _with_time(meter: SandboxMeter, ts: float) -> SandboxMeter:
    return replace(meter, sampled_at=ts)


def _sample(sandboxes: Iterable[SandboxInfo], i: int, ts: float) -> MeterSample:
    meters = tuple(_meter(s, i) for s in sandboxes if s.phase != "terminated")
    live = [m for m in meters if m.unique_mem is not None]
    unique = sum(m.unique_mem or 0 for m in live)
    overhead = sum(m.vmm_overhead or 0 for m in live)
    disks = [m for m in meters if m.unique_disk is not None]
    naive = unique + overhead + len(live) * _TEMPLATE_MEM
    cow = unique + overhead + (_TEMPLATE_MEM if live else 0)
    host = HostTotals(
        mem_naive=naive,
        mem_cow=cow,
        mem_saved=naive - cow,
        disk_naive=sum((m.unique_disk or 0) + _TEMPLATE_DISK for m in disks),
        disk_cow=sum(m.unique_disk or 0 for m in disks) + _TEMPLATE_DISK,
        cpu_percent=sum(m.cpu_percent or 0.0 for m in live) / 2,  # 2 host CPUs
        cpu_count=2,
        mem_total=24 * 1024 * MiB,
    )
    return MeterSample(ts=ts, sandboxes=meters, host=host)


class FakeShell:
    """A tiny line-echoing shell, enough to show a shell tab without a guest.

    It keeps a transcript, as the engine keeps a shell's scrollback: a new viewer (a re-attach)
    gets the transcript first, then live output.
    """

    def __init__(self, hostname: str, sandbox_id: str = "", shell_id: str = "sh-1") -> None:
        self.prompt = f"root@{hostname}:~# ".encode()
        self.sandbox_id = sandbox_id
        self._shell_id = shell_id
        self.transcript = bytearray()
        self._viewers: list[asyncio.Queue[bytes | None]] = []
        self._line = bytearray()
        self._exit_code: int | None = None
        self.state = "running"
        self._put(b"Debian GNU/Linux 12 (fake shell)\r\n\r\n" + self.prompt)

    @property
    def shell_id(self) -> str:
        return self._shell_id

    def _put(self, data: bytes | None) -> None:
        if data is not None:
            self.transcript += data
        for queue in self._viewers:
            queue.put_nowait(data)

    def viewer(self) -> FakeShellView:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        queue.put_nowait(bytes(self.transcript))
        if self.state != "running":
            queue.put_nowait(None)
        self._viewers.append(queue)
        return FakeShellView(self, queue)

    def info(self) -> ShellInfo:
        return ShellInfo(
            self.sandbox_id,
            self._shell_id,
            self.state,
            ("bash", "-l"),
            FAKE_NOW - 600,
            len(self._viewers),
            self._exit_code,
        )

    @property
    def exit_code(self) -> int | None:
        return self._exit_code

    async def write(self, data: bytes) -> None:
        for byte in data:
            if byte == 13:
                line = self._line.decode(errors="replace")
                self._line.clear()
                if line.strip() == "exit":
                    self._put(b"\r\nlogout\r\n")
                    self._exit_code = 0
                    self.state = "exited"
                    self._put(None)
                    return
                reply = line[5:] + "\r\n" if line.startswith("echo ") else ""
                self._put(b"\r\n" + reply.encode() + self.prompt)
            elif byte == 127:
                if self._line:
                    self._line.pop()
                    self._put(b"\b \b")
            elif byte >= 32:
                self._line.append(byte)
                self._put(bytes([byte]))


class FakeShellView:
    """One attachment to a FakeShell: closing it detaches, the shell lives on."""

    def __init__(self, shell: FakeShell, queue: asyncio.Queue[bytes | None]) -> None:
        self.shell = shell
        self._queue = queue

    @property
    def shell_id(self) -> str:
        return self.shell.shell_id

    @property
    def exit_code(self) -> int | None:
        return self.shell._exit_code

    async def output(self) -> AsyncIterator[bytes]:
        while (data := await self._queue.get()) is not None:
            yield data

    async def write(self, data: bytes) -> None:
        await self.shell.write(data)

    async def resize(self, cols: int, rows: int) -> None:
        return None

    async def close(self) -> None:
        if self._queue in self.shell._viewers:
            self.shell._viewers.remove(self._queue)
        self._queue.put_nowait(None)


class FakeEngine:
    """Implements EngineGateway over fixed data; actions change it in memory."""

    def __init__(
        self,
        now: float = FAKE_NOW,
        features: Iterable[str] = DEFAULT_FEATURES,
        live_interval: float | None = None,
        fail_connect: GroveError | None = None,
        population: int | None = None,
        where: str = "demo data (no engine)",
        id_base: int = 0xC0000000,
    ) -> None:
        self.now = now
        self.where = where
        self.features = frozenset(features)
        #: None: metering yields its history and then stays quiet (snapshot tests);
        #: a number: a new sample every that many seconds (demos).
        self.live_interval = live_interval
        self.fail_connect = fail_connect
        self.environments = [
            EnvironmentInfo(
                "debian:12",
                "Debian 12 (bookworm), minbase + python3",
                cached=True,
                template_ready=True,
                size_bytes=_TEMPLATE_DISK,
            ),
        ]
        people = _sandboxes(now) if population is None else _population(now, population, id_base)
        self.sandboxes = {s.id: s for s in people}
        self._events: list[EventInfo] = []
        self._subscribers: list[tuple[str, asyncio.Queue[EventInfo]]] = []
        self._watchers: list[asyncio.Queue[EventInfo | None]] = []
        #: Set: every call blocks forever (a hung host, for the fleet's tests and bench).
        self.hang = False
        self._created = 0
        self._tick = HISTORY
        self._started = time.monotonic()
        self.calls: list[str] = []
        #: Every push and pull asked for: (direction, sandbox id, source, dest).
        self.transfers: list[tuple[str, str, str, str]] = []
        #: Set: the next transfers wait for it after their first sending step (tests look
        #: at the progress line meanwhile).
        self.transfer_gate: asyncio.Event | None = None
        self.shells: dict[str, list[FakeShell]] = {}
        self.services: dict[tuple[str, str], ServiceInfo] = {}
        self.service_lines: dict[tuple[str, str], list[LogLine]] = {}
        self._log_subscribers: list[tuple[tuple[str, str], asyncio.Queue[list[LogLine]]]] = []
        for sandbox in self.sandboxes.values():
            self._seed_events(sandbox)
        if "sb-1f3a9c20" in self.sandboxes:
            self._seed_service("sb-1f3a9c20")

    def _require(self, feature: str, label: str) -> None:
        if feature not in self.features:
            raise not_supported(label)

    # -- events

    def _seed_events(self, s: SandboxInfo) -> None:
        t = s.created_at
        if s.parent_id:
            self._emit(s.id, "forked", t, parent=s.parent_id, restore_ms=104.0)
        else:
            self._emit(s.id, "created", t, environment=s.environment, create_ms=212.0)
        if s.phase == "failed":
            self._emit(s.id, "failed", t + 3, error=s.error)
            return
        self._emit(s.id, "running", t + 0.2)
        self._emit(s.id, "exec", t + 30, argv=["python3", "-c", "print(6*7)"], exit_code=0)
        if s.phase == "paused":
            self._emit(s.id, "paused", t + 60)
        if s.phase == "stopped":
            self._emit(s.id, "stopped", t + 3600)

    def _emit(self, sandbox_id: str, kind: str, ts: float | None = None, **detail: object) -> None:
        event = EventInfo(
            len(self._events) + 1, sandbox_id, self.now if ts is None else ts, kind, dict(detail)
        )
        self._events.append(event)
        for watcher in self._watchers:
            watcher.put_nowait(event)
        for wanted, queue in self._subscribers:
            if wanted == sandbox_id:
                queue.put_nowait(event)

    def _seed_service(self, sandbox_id: str) -> None:
        key = (sandbox_id, "http")
        self.services[key] = ServiceInfo(
            sandbox_id,
            "http",
            "running",
            ready=True,
            pid=211,
            argv=("python3", "-m", "http.server", "8000"),
            probe="tcp:127.0.0.1:8000",
        )
        start = self.now - 7200
        lines = [
            LogLine(start, "grove", "started pid 211"),
            LogLine(start + 6.8, "grove", "ready (tcp 127.0.0.1:8000) in 6812.0 ms"),
        ]
        for i in range(12):
            path = ("/", "/health", "/api/items", "/static/app.js")[i % 4]
            code = 404 if path == "/api/items" and i % 3 == 0 else 200
            stamp = time.strftime("%d/%b/%Y %H:%M:%S", time.gmtime(start + 60 + i * 37))
            lines.append(
                LogLine(
                    start + 60 + i * 37,
                    "stderr",
                    f'10.0.2.2 - - [{stamp}] "GET {path} HTTP/1.1" {code} -',
                )
            )
        self.service_lines[key] = lines

    def log(self, sandbox_id: str, name: str, text: str, stream: str = "stdout") -> None:
        """Append to a service's log (tests and demos), as the guest process would."""
        line = LogLine(self.now, stream, text)
        key = (sandbox_id, name)
        self.service_lines.setdefault(key, []).append(line)
        for wanted, queue in self._log_subscribers:
            if wanted == key:
                queue.put_nowait([line])

    # -- EngineGateway

    @property
    def description(self) -> str:
        return self.where

    async def connect(self, start: bool = True) -> None:
        self.calls.append("connect")
        await self._while_hung()
        if self.fail_connect is not None:
            raise self.fail_connect

    async def watch(self, after: int = 0, replay: int = 0) -> AsyncIterator[InventoryChange]:
        """The inventory watch: everything first, then what each burst of events changed."""
        if self.fail_connect is not None:
            raise self.fail_connect
        queue: asyncio.Queue[EventInfo | None] = asyncio.Queue()
        self._watchers.append(queue)
        try:
            if after:
                events = [e for e in self._events if e.seq > after]
            else:
                events = self._events[-replay:] if replay else []
            yield InventoryChange(
                cursor=len(self._events),
                full=True,
                sandboxes=tuple(await self.list_sandboxes()),
                events=tuple(events),
                environments=tuple(self.environments),
                lineage=tuple(await self._lineage_nodes()),
            )
            while True:
                items = [await queue.get()]
                while not queue.empty():
                    items.append(queue.get_nowait())
                if None in items and self.fail_connect is not None:
                    raise self.fail_connect  # dropped: the stream breaks as a lost link's does
                batch = [e for e in items if e is not None]
                named = {e.sandbox_id for e in batch}
                listed = [self.sandboxes[i] for i in named if i in self.sandboxes]
                if not batch:
                    continue
                yield InventoryChange(
                    cursor=batch[-1].seq,
                    full=False,
                    sandboxes=tuple(s for s in listed if s.phase != "terminated"),
                    removed=tuple(s.id for s in listed if s.phase == "terminated"),
                    events=tuple(batch),
                    environments=tuple(self.environments),
                    lineage=tuple(await self._lineage_nodes()),
                )
        finally:
            self._watchers.remove(queue)

    async def _while_hung(self) -> None:
        while self.hang:  # a call to a hung engine returns once it answers again, if ever
            await asyncio.sleep(0.05)

    def drop(self, error: GroveError | None = None) -> None:
        """The engine goes away: open streams break and connecting fails until `restore()`."""
        self.fail_connect = error or GroveError(
            "engine_unreachable",
            "the engine stopped answering (connection reset)",
            "check the host; the dashboard reconnects by itself",
        )
        for watcher in self._watchers:
            watcher.put_nowait(None)

    def restore(self) -> None:
        self.fail_connect = None

    async def _lineage_nodes(self) -> list[LineageNode]:
        if "lineage" in self.features:
            return await self.lineage()
        return derive_lineage(self.environments, await self.list_sandboxes())

    async def close(self) -> None:
        return None

    async def status(self) -> EngineInfo:
        await self._while_hung()
        running = sum(1 for s in self.sandboxes.values() if s.phase == "running")
        return EngineInfo(
            pid=4242,
            accelerator="tcg",
            accelerator_reason="no hardware virtualization (kvm_pvm only)",
            home="/var/lib/grove",
            version="0.1.0",
            started_at=self.now - 86400,
            sandboxes_running=running,
            host_cpus=2,
            host_mem_bytes=24 * 1024 * MiB,
            limits=Limits(),
        )

    async def list_environments(self) -> list[EnvironmentInfo]:
        return list(self.environments)

    async def pull_environment(self, name: str, warm: bool = True) -> AsyncIterator[PullUpdate]:
        self.calls.append(f"pull {name}")
        cached = any(e.name == name and e.cached for e in self.environments)
        if cached:
            yield PullUpdate("cached", 1.0, done=True, cache_hit=True)
            return
        for i, stage in enumerate(("kernel", "initramfs", "rootfs", "template")):
            await asyncio.sleep(0)
            yield PullUpdate(stage, i / 4)
        self.environments.append(EnvironmentInfo(name, cached=True, template_ready=warm))
        yield PullUpdate("done", 1.0, done=True)

    async def list_sandboxes(self, include_terminated: bool = False) -> list[SandboxInfo]:
        return [s for s in self.sandboxes.values() if include_terminated or s.phase != "terminated"]

    def _get(self, ref: str) -> SandboxInfo:
        for s in self.sandboxes.values():
            if ref in (s.id, s.name) and s.phase != "terminated":
                return s
        raise not_found("sandbox", ref, "list sandboxes with 'grove ps'")

    def _set(self, sandbox: SandboxInfo, **changes: object) -> SandboxInfo:
        updated = replace(sandbox, **changes)  # type: ignore[arg-type]
        self.sandboxes[sandbox.id] = updated
        return updated

    async def create_sandbox(
        self, environment: str, name: str = "", vcpus: int = 0, mem_mib: int = 0
    ) -> SandboxInfo:
        self.calls.append(f"create {environment}")
        if not any(e.name == environment for e in self.environments):
            raise not_found("environment", environment, "pull it with 'grove env pull NAME'")
        self._created += 1
        sandbox = SandboxInfo(
            id=f"sb-{0xA0000000 + self._created:08x}",
            name=name,
            environment=environment,
            phase="running",
            vcpus=vcpus or 1,
            mem_mib=mem_mib or 512,
            pid=42000 + self._created,
            created_at=self.now,
            network="published",
        )
        self.sandboxes[sandbox.id] = sandbox
        self._emit(sandbox.id, "created", environment=environment, create_ms=212.0)
        self._emit(sandbox.id, "running")
        return sandbox

    async def stop_sandbox(self, ref: str) -> SandboxInfo:
        self.calls.append(f"stop {ref}")
        sandbox = self._get(ref)
        if sandbox.phase not in ("running", "paused"):
            raise GroveError(
                "invalid_phase", f"sandbox {sandbox.id} is {sandbox.phase}", "start it first"
            )
        self._emit(sandbox.id, "stopped")
        return self._set(sandbox, phase="stopped", pid=None)

    async def start_sandbox(self, ref: str) -> SandboxInfo:
        self.calls.append(f"start {ref}")
        sandbox = self._get(ref)
        if sandbox.phase != "stopped":
            raise GroveError(
                "invalid_phase",
                f"sandbox {sandbox.id} is {sandbox.phase}; it cannot become running",
                "stop it first",
            )
        self._emit(sandbox.id, "running")
        return self._set(sandbox, phase="running", pid=43000)

    async def terminate_sandbox(self, ref: str) -> SandboxInfo:
        self.calls.append(f"terminate {ref}")
        sandbox = self._get(ref)
        self._emit(sandbox.id, "terminated")
        return self._set(sandbox, phase="terminated", pid=None)

    async def exec_capture(
        self, ref: str, argv: Sequence[str], timeout_s: float | None = None
    ) -> ExecResult:
        sandbox = self._get(ref)
        self._emit(sandbox.id, "exec", argv=list(argv), exit_code=0)
        return ExecResult(0, (" ".join(argv) + "\n").encode(), b"", 41.0)

    async def events(
        self, sandbox: str, follow: bool = True, after: int = 0
    ) -> AsyncIterator[EventInfo]:
        target = next((s.id for s in self.sandboxes.values() if sandbox in (s.id, s.name)), None)
        if target is None:
            raise not_found("sandbox", sandbox, "list sandboxes with 'grove ps'")
        queue: asyncio.Queue[EventInfo] = asyncio.Queue()
        subscription = (target, queue)
        self._subscribers.append(subscription)
        try:
            for event in list(self._events):
                if event.sandbox_id == target and event.seq > after:
                    yield event
            while follow:
                yield await queue.get()
        finally:
            self._subscribers.remove(subscription)

    async def metering_stream(self, interval_s: float = 1.0) -> AsyncIterator[MeterSample]:
        self._require("metering", "metering")
        for i in range(HISTORY):
            yield _sample(self.sandboxes.values(), i, self.now - (HISTORY - i) * interval_s)
        interval = self.live_interval
        if interval is None:
            await asyncio.Event().wait()  # quiet forever: the screen stays the same
            return
        while True:
            await asyncio.sleep(interval)
            while self.hang:  # a hung engine: the stream stays open and says nothing
                await asyncio.sleep(0.05)
            self._tick += 1
            # The fake's own clock: `now` when made, then advancing as the demo runs.
            self._reap_expired(self.now + time.monotonic() - self._started)
            yield _sample(self.sandboxes.values(), self._tick, self.now)

    def _reap_expired(self, at: float) -> None:
        """In a live demo time passes: a sandbox whose TTL ran out goes as the engine's
        reaper would have it go (snapshot tests, with no live metering, never get here)."""
        for sandbox in list(self.sandboxes.values()):
            due = sandbox.expires_at is not None and sandbox.expires_at <= at
            if due and sandbox.phase != "terminated":
                self._emit(sandbox.id, "expired", at, expires_at=sandbox.expires_at)
                self._emit(sandbox.id, "terminated", at)
                self._set(sandbox, phase="terminated", pid=None)

    async def metering_history(self, ref: str) -> list[SandboxMeter]:
        self._require("history", "metering history")
        sandbox = self._get(ref)
        return [_with_time(_meter(sandbox, i), self.now - (HISTORY - i)) for i in range(HISTORY)]

    async def lineage(self) -> list[LineageNode]:
        self._require("lineage", "the lineage tree")
        return derive_lineage(self.environments, await self.list_sandboxes())

    async def fork(self, ref: str, count: int = 1, name_prefix: str = "") -> list[SandboxInfo]:
        self._require("fork", "snapshot-fork")
        parent = self._get(ref)
        children = []
        for i in range(count):
            self._created += 1
            child = replace(
                parent,
                id=f"sb-{0xB0000000 + self._created:08x}",
                name=f"{name_prefix or parent.label + '-fork'}-{i + 1}",
                phase="running",
                parent_id=parent.id,
                created_at=self.now,
                pid=44000 + self._created,
            )
            self.sandboxes[child.id] = child
            self._emit(child.id, "forked", parent=parent.id, restore_ms=104.0)
            children.append(child)
        return children

    async def snapshot(self, ref: str, name: str) -> LineageNode:
        self._require("snapshot", "snapshots")
        sandbox = self._get(ref)
        return LineageNode(
            id=f"snap-{sandbox.id[3:]}",
            kind="snapshot",
            label=name or f"{sandbox.label}@snap",
            parent_id=sandbox.id,
        )

    async def reset_sandbox(self, ref: str, snapshot: str = "") -> SandboxInfo:
        self.calls.append(f"reset {ref} {snapshot}".rstrip())
        self._require("reset", "reset")
        sandbox = self._get(ref)
        self._emit(sandbox.id, "reset", snapshot=snapshot or "(creation)")
        return sandbox

    async def network(self, ref: str, policy: str | None = None) -> NetworkInfo:
        self._require("network", "network policies")
        sandbox = self._get(ref)
        applied = None
        if policy is not None:
            self.calls.append(f"network {ref} {policy}")
            text = str(net_policy.parse(policy))  # the engine's own check and its errors
            applied = 1.8
            sandbox = self._set(sandbox, network=text)
            self._emit(sandbox.id, "network_changed", policy=text)
        meter = _meter(sandbox, self._tick)
        return NetworkInfo(
            sandbox.id, sandbox.network, "namespace", meter.net_rx, meter.net_tx, applied
        )

    def _running(self, ref: str) -> SandboxInfo:
        sandbox = self._get(ref)
        if sandbox.phase != "running":
            raise GroveError(
                "sandbox_not_running",
                f"sandbox {sandbox.label} is {sandbox.phase}",
                "start it first",
            )
        return sandbox

    async def list_shells(self, ref: str) -> list[ShellInfo]:
        self._require("shell", "interactive shells")
        sandbox = self._get(ref)
        return [shell.info() for shell in self.shells.get(sandbox.id, [])]

    async def open_shell(self, ref: str, cols: int, rows: int, shell_id: str = "") -> ShellSession:
        self._require("shell", "interactive shells")
        sandbox = self._running(ref)
        shells = self.shells.setdefault(sandbox.id, [])
        if shell_id:
            for shell in shells:
                if shell.shell_id == shell_id:
                    return shell.viewer()
            raise not_found("shell", shell_id, "list shells with 'grove shell ls'")
        shell = FakeShell(sandbox.label, sandbox.id, f"sh-{len(shells) + 1}")
        shells.append(shell)
        return shell.viewer()

    async def list_services(self, ref: str) -> list[ServiceInfo]:
        self._require("services", "services")
        sandbox = self._get(ref)
        return [info for (sid, _), info in sorted(self.services.items()) if sid == sandbox.id]

    async def start_service(
        self, ref: str, name: str, argv: Sequence[str], probe: tuple[str, str] | None = None
    ) -> ServiceInfo:
        self.calls.append(f"service start {ref} {name}")
        self._require("services", "services")
        sandbox = self._running(ref)
        key = (sandbox.id, name)
        if key in self.services and self.services[key].active:
            raise GroveError(
                "service_exists",
                f"service {name} is already running",
                f"stop it first, or choose another name than {name}",
            )
        await asyncio.sleep(0)
        info = ServiceInfo(
            sandbox.id,
            name,
            "running",
            ready=True,
            pid=300 + len(self.services),
            argv=tuple(argv),
            probe=":".join(probe) if probe else "",
        )
        self.services[key] = info
        self.log(sandbox.id, name, f"started pid {info.pid}", "grove")
        self._emit(sandbox.id, "service_started", service=name, pid=info.pid)
        return info

    async def stop_service(self, ref: str, name: str) -> ServiceInfo:
        self.calls.append(f"service stop {ref} {name}")
        self._require("services", "services")
        sandbox = self._get(ref)
        key = (sandbox.id, name)
        if key not in self.services:
            raise not_found("service", name, "list services with 'grove service ls'")
        info = self.services[key] = replace(
            self.services[key], state="stopped", pid=None, ready=False
        )
        self.log(sandbox.id, name, "stopped (TERM)", "grove")
        self._emit(sandbox.id, "service_stopped", service=name, exit_code=None)  # as the engine
        return info

    async def service_logs(
        self, ref: str, name: str, follow: bool = True, tail: int = 500
    ) -> AsyncIterator[list[LogLine]]:
        self._require("services", "service logs")
        sandbox = next((s for s in self.sandboxes.values() if ref in (s.id, s.name)), None)
        key = (sandbox.id if sandbox else ref, name)
        if key not in self.service_lines:
            raise not_found("service", name, "list services with 'grove service ls'")
        queue: asyncio.Queue[list[LogLine]] = asyncio.Queue()
        subscription = (key, queue)
        self._log_subscribers.append(subscription)
        try:
            yield self.service_lines[key][-tail:]
            while follow:
                yield await queue.get()
        finally:
            self._log_subscribers.remove(subscription)

    # -- files

    async def push_files(
        self, ref: str, local: str, guest: str, progress: OnProgress | None = None
    ) -> TransferResult:
        self._require("files", "file transfers")
        sandbox = self._running(ref)
        self.calls.append(f"push {sandbox.id} {local} {guest}")
        self.transfers.append(("push", sandbox.id, local, guest))
        await self._transfer(progress, "sending")
        return TransferResult(
            "push", local, guest, TRANSFER_BYTES, TRANSFER_FILES, TRANSFER_SECONDS
        )

    async def pull_files(
        self, ref: str, guest: str, local: str, progress: OnProgress | None = None
    ) -> TransferResult:
        self._require("files", "file transfers")
        sandbox = self._running(ref)
        self.calls.append(f"pull {sandbox.id} {guest} {local}")
        self.transfers.append(("pull", sandbox.id, guest, local))
        await self._transfer(progress, "receiving")
        return TransferResult(
            "pull", guest, local, TRANSFER_BYTES, TRANSFER_FILES, TRANSFER_SECONDS
        )

    async def _transfer(self, progress: OnProgress | None, moving: str) -> None:
        for i, step in enumerate(TRANSFER_STEPS):
            if progress is not None:
                progress(replace(step, stage=moving) if step.stage == "sending" else step)
            await asyncio.sleep(0)
            if i == 2 and self.transfer_gate is not None:
                await self.transfer_gate.wait()


def fake_fleet(
    hosts: int,
    population: int | None = None,
    unreachable: int = 0,
    now: float = FAKE_NOW,
    live_interval: float | None = 1.0,
    hung: int = 0,
) -> dict[str, FakeEngine]:
    """`hosts` fake engines (host-1 ...), `unreachable` more that refuse connections, and
    `hung` more whose connection attempts never return (a host that drops packets)."""
    fleet: dict[str, FakeEngine] = {}
    for i in range(hosts):
        name = f"host-{i + 1}"
        fleet[name] = FakeEngine(
            now=now,
            live_interval=live_interval,
            population=population,
            where=f"ssh://grove@{name}",
            id_base=0xC0000000 + i * 0x100000,
        )
    for i in range(unreachable):
        name = f"down-{i + 1}"
        fleet[name] = FakeEngine(
            now=now,
            where=f"ssh://grove@{name}",
            fail_connect=GroveError(
                "host_unreachable",
                f"cannot reach {name}:22 (connection refused)",
                "check that the host is up and sshd listens",
            ),
        )
    for i in range(hung):
        name = f"hung-{i + 1}"
        fleet[name] = FakeEngine(now=now, where=f"ssh://grove@{name}")
        fleet[name].hang = True
    return fleet
