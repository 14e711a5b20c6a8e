"""EngineGateway over the SDK's AsyncGrove: the dashboard's view of the local engine.

A thin adapter: AsyncGrove makes the calls and raises GroveError; this module only turns the
SDK's models into the dashboard's (`tui.models`) where they differ. Engine and dashboard ship
in one package, and the API version check on connect covers a mismatched engine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence

import psutil

from engine.client import AsyncGrove, Probe, ShellStream, socket_alive
from engine.client import models as m
from engine.config import Paths
from tui.engine.gateway import OnProgress, ShellSession, throttled
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

# SDK models -> dashboard models


def engine_info(s: m.EngineInfo, host: m.HostMeter | None = None) -> EngineInfo:
    """The engine's status; host figures from its metering when remote, else from here."""
    if host is not None:
        cpus, mem = host.cpu_count, host.mem_total_bytes
    else:
        cpus, mem = psutil.cpu_count(), psutil.virtual_memory().total
    return EngineInfo(
        pid=s.pid,
        accelerator=s.accelerator,
        accelerator_reason=s.accelerator_reason,
        home=s.home,
        version=s.version,
        started_at=s.started_at,
        sandboxes_running=s.sandboxes_running,
        host_cpus=cpus,
        host_mem_bytes=mem,
        limits=limits(s.limits),
    )


def limits(lim: m.Limits | None) -> Limits | None:
    if lim is None:
        return None
    return Limits(
        max_fork_replicas=lim.max_fork_replicas,
        max_vcpus=lim.max_vcpus,
        min_mem_mib=lim.min_mem_mib,
        max_mem_mib=lim.max_mem_mib,
        default_vcpus=lim.default_vcpus,
        default_mem_mib=lim.default_mem_mib,
    )


def event_info(e: m.Event) -> EventInfo:
    return EventInfo(
        seq=e.seq, sandbox_id=e.sandbox_id, ts=e.ts, kind=e.kind, detail=dict(e.detail)
    )


def inventory_change(u: m.InventoryUpdate) -> InventoryChange:
    return InventoryChange(
        cursor=u.cursor,
        full=u.full,
        sandboxes=tuple(sandbox_info(s) for s in u.sandboxes),
        removed=tuple(u.removed),
        events=tuple(event_info(e) for e in u.events),
        environments=(
            tuple(environment_info(e) for e in u.environments)
            if u.environments is not None
            else None
        ),
        lineage=tuple(lineage_nodes(u.lineage)) if u.lineage is not None else None,
    )


def environment_info(e: m.Environment) -> EnvironmentInfo:
    return EnvironmentInfo(
        name=e.name,
        description=e.description,
        cached=e.cached,
        template_ready=e.template_ready,
        size_bytes=e.size_bytes,
    )


def sandbox_info(s: m.Sandbox) -> SandboxInfo:
    return SandboxInfo(
        id=s.id,
        name=s.name,
        environment=s.environment,
        phase=s.phase,
        vcpus=s.vcpus,
        mem_mib=s.mem_mib,
        pid=s.pid,
        created_at=s.created_at,
        parent_id=s.parent_id or "",
        template_id=s.template_id or "",
        error=s.error or "",
        has_secrets=s.has_secrets,
        network=s.network or "",
        expires_at=s.expires_at,
    )


def sandbox_meter(s: m.SandboxMeter, with_time: bool = False) -> SandboxMeter:
    return SandboxMeter(
        sandbox_id=s.id,
        unique_mem=s.unique_mem_bytes,
        shared_mem=s.shared_mem_bytes,
        vmm_overhead=s.vmm_overhead_bytes,
        unique_disk=s.unique_disk_bytes,
        shared_disk=s.shared_disk_bytes,
        cpu_percent=s.cpu_percent,
        net_rx=s.net_rx_bytes,
        net_tx=s.net_tx_bytes,
        # Live samples share the sample's time; history samples carry their own.
        sampled_at=s.sampled_at if with_time else None,
    )


def meter_sample(sample: m.MeterSample) -> MeterSample:
    h = sample.host
    host = HostTotals(
        mem_naive=h.naive_mem_bytes,
        mem_cow=h.cow_aware_mem_bytes,
        mem_saved=h.saved_mem_bytes,
        template_mem=h.template_mem_bytes,
        disk_naive=h.naive_disk_bytes,
        disk_cow=h.cow_aware_disk_bytes,
        cpu_percent=h.cpu_percent,
        cpu_count=h.cpu_count,
        mem_total=h.mem_total_bytes,
    )
    return MeterSample(
        ts=sample.sampled_at or 0.0,
        sandboxes=tuple(sandbox_meter(s) for s in sample.sandboxes),
        host=host,
    )


def lineage_nodes(roots: Sequence[m.LineageNode]) -> list[LineageNode]:
    """The SDK's lineage forest, flattened parents first, each node naming its parent."""
    nodes: list[LineageNode] = []

    def walk(node: m.LineageNode, parent: str) -> None:
        nodes.append(
            LineageNode(
                id=node.id,
                kind=node.kind,
                label=node.name or node.id,
                parent_id=parent,
                phase=node.phase or "",
            )
        )
        for child in node.children:
            walk(child, node.id)

    for root in roots:
        walk(root, "")
    return nodes


def shell_info(i: m.Shell) -> ShellInfo:
    return ShellInfo(
        sandbox_id=i.sandbox_id,
        shell_id=i.shell_id,
        state=i.state,
        argv=i.argv,
        created_at=i.created_at,
        viewers=i.viewers,
        exit_code=i.exit_code,
    )


def service_info(i: m.Service) -> ServiceInfo:
    return ServiceInfo(
        sandbox_id=i.sandbox_id,
        name=i.name,
        state=i.state,
        ready=i.ready,
        pid=i.pid,
        argv=i.argv,
        probe=i.probe or "",
        restarts=i.restarts,
        error=i.error or "",
        ports=tuple(f"{p.host}:{p.host_port}->{p.guest_port}" for p in i.published_ports),
    )


def transfer_progress(p: m.TransferProgress, elapsed: float | None = None) -> TransferProgress:
    return TransferProgress(
        stage=p.stage, done=p.done_bytes, total=p.total_bytes, files=p.files, elapsed=elapsed
    )


def _relay(progress: OnProgress | None) -> Callable[[m.TransferProgress], None] | None:
    """The SDK reports every chunk: the dashboard hears at most ten updates a second, each
    timed from the start (for the rate)."""
    if progress is None:
        return None
    told = throttled(progress)
    began = time.monotonic()
    return lambda p: told(transfer_progress(p, time.monotonic() - began))


class GroveShell:
    """A guest PTY: the SDK's ShellStream as the dashboard's ShellSession.

    Closing detaches: the engine keeps the shell running in the guest, as a terminal
    multiplexer would, so it survives the dashboard.
    """

    def __init__(self, stream: ShellStream) -> None:
        self._stream = stream

    @property
    def shell_id(self) -> str:
        return self._stream.info.shell_id

    def output(self) -> AsyncIterator[bytes]:
        return self._stream.output()

    @property
    def exit_code(self) -> int | None:
        ended = self._stream.exit
        return ended.exit_code if ended is not None else None

    async def write(self, data: bytes) -> None:
        await self._stream.write(data)

    async def resize(self, cols: int, rows: int) -> None:
        await self._stream.resize(cols, rows)

    async def close(self) -> None:
        await self._stream.detach()


class GrpcGateway:
    """Talks to an engine: the local one (started on demand like the CLI does) or, with host,
    one reached over SSH.

    Connects lazily: the first call connects if connect() was not called first.
    """

    def __init__(
        self, paths: Paths | None = None, autostart: bool = True, host: str | None = None
    ) -> None:
        self.paths = paths or Paths.from_env()
        self.autostart = autostart
        self.host = host
        self._grove: AsyncGrove | None = None
        # A remote engine's host size (CPUs, memory), asked once per connection: it does not
        # change, and status() runs on every refresh.
        self._remote_host: m.HostMeter | None = None
        # Two first calls at once (lazy connects) must not close each other's client.
        self._connecting = asyncio.Lock()

    @property
    def description(self) -> str:
        if self._grove is not None and self._grove.tunnel is not None:
            return self._grove.description
        return self.host or str(self.paths.socket)

    async def connect(self, start: bool = True) -> None:
        async with self._connecting:
            if self._grove is not None and (
                self._grove.tunnel is not None or await asyncio.to_thread(socket_alive, self.paths)
            ):
                return
            # Starts the engine on demand (off this loop) and checks its API version.
            grove = await AsyncGrove.connect(
                self.paths, autostart=self.autostart and start, host=self.host
            )
            await self.close()
            self._grove = grove

    async def close(self) -> None:
        grove, self._grove = self._grove, None
        self._remote_host = None
        if grove is not None:
            await grove.close()

    async def _client(self) -> AsyncGrove:
        if self._grove is None:
            await self.connect()
        assert self._grove is not None
        return self._grove

    # engine and environments

    async def status(self) -> EngineInfo:
        client = await self._client()
        if client.tunnel is not None and self._remote_host is None:
            self._remote_host = (await client.top()).host
        return engine_info(await client.status(), self._remote_host)

    async def list_environments(self) -> list[EnvironmentInfo]:
        return [environment_info(e) for e in await (await self._client()).environments()]

    async def pull_environment(self, name: str, warm: bool = True) -> AsyncIterator[PullUpdate]:
        grove = await self._client()
        async for update in grove.pull(name, warm=warm):
            yield PullUpdate(
                stage=update.stage,
                fraction=update.fraction,
                done=update.done,
                cache_hit=update.cache_hit,
            )

    # sandboxes

    async def list_sandboxes(self, include_terminated: bool = False) -> list[SandboxInfo]:
        grove = await self._client()
        return [sandbox_info(s) for s in await grove.sandboxes(all=include_terminated)]

    async def create_sandbox(
        self, environment: str, name: str = "", vcpus: int = 0, mem_mib: int = 0
    ) -> SandboxInfo:
        grove = await self._client()
        return sandbox_info(await grove.create(environment, name, vcpus=vcpus, mem_mib=mem_mib))

    async def stop_sandbox(self, ref: str) -> SandboxInfo:
        return sandbox_info(await (await self._client()).stop(ref))

    async def start_sandbox(self, ref: str) -> SandboxInfo:
        return sandbox_info(await (await self._client()).start(ref))

    async def terminate_sandbox(self, ref: str) -> SandboxInfo:
        return sandbox_info(await (await self._client()).terminate(ref))

    async def exec_capture(
        self, ref: str, argv: Sequence[str], timeout_s: float | None = None
    ) -> ExecResult:
        grove = await self._client()
        result = await grove.exec(ref, argv, timeout_s=timeout_s or 0)
        return ExecResult(result.exit_code, result.stdout, result.stderr, result.duration_ms)

    async def watch(self, after: int = 0, replay: int = 0) -> AsyncIterator[InventoryChange]:
        grove = await self._client()
        async for update in grove.watch_inventory(after=after, replay=replay):
            yield inventory_change(update)

    # metering, lineage, fork, snapshots

    async def metering_stream(self, interval_s: float = 1.0) -> AsyncIterator[MeterSample]:
        grove = await self._client()
        async for sample in grove.watch_metering(interval_s):
            yield meter_sample(sample)

    async def metering_history(self, ref: str) -> list[SandboxMeter]:
        history = await (await self._client()).metering_history(ref)
        return [sandbox_meter(s, with_time=True) for s in history.samples]

    async def lineage(self) -> list[LineageNode]:
        return lineage_nodes(await (await self._client()).lineage())

    async def fork(self, ref: str, count: int = 1, name_prefix: str = "") -> list[SandboxInfo]:
        grove = await self._client()
        result = await grove.fork(ref, replicas=count, name_prefix=name_prefix)
        return [sandbox_info(child) for child in result.children]

    async def snapshot(self, ref: str, name: str) -> LineageNode:
        snap = await (await self._client()).snapshot(ref, name)
        return LineageNode(
            id=snap.id, kind="snapshot", label=snap.name or snap.id, parent_id=snap.source or ""
        )

    async def reset_sandbox(self, ref: str, snapshot: str = "") -> SandboxInfo:
        return sandbox_info(await (await self._client()).reset(ref, snapshot))

    async def network(self, ref: str, policy: str | None = None) -> NetworkInfo:
        info = await (await self._client()).network(ref, policy)
        return NetworkInfo(
            sandbox_id=info.sandbox_id,
            policy=info.policy,
            backend=info.backend,
            rx_bytes=info.rx_bytes,
            tx_bytes=info.tx_bytes,
            applied_ms=info.applied_ms,
        )

    # shells and services

    async def list_shells(self, ref: str) -> list[ShellInfo]:
        return [shell_info(i) for i in await (await self._client()).shells(ref)]

    async def open_shell(self, ref: str, cols: int, rows: int, shell_id: str = "") -> ShellSession:
        grove = await self._client()
        return GroveShell(await grove.shell(ref, shell_id=shell_id, cols=cols, rows=rows))

    async def list_services(self, ref: str) -> list[ServiceInfo]:
        return [service_info(i) for i in await (await self._client()).services(ref)]

    async def start_service(
        self, ref: str, name: str, argv: Sequence[str], probe: tuple[str, str] | None = None
    ) -> ServiceInfo:
        grove = await self._client()
        ready = Probe(kind=probe[0], target=probe[1]) if probe else None
        return service_info(await grove.service_start(ref, name, argv, probe=ready))

    async def stop_service(self, ref: str, name: str) -> ServiceInfo:
        return service_info(await (await self._client()).service_stop(ref, name))

    async def service_logs(
        self, ref: str, name: str, follow: bool = True, tail: int = 500
    ) -> AsyncIterator[list[LogLine]]:
        # The SDK's stream ends quietly when the call is cancelled (the pane closed).
        grove = await self._client()
        async for batch in grove.service_logs(ref, name, tail=tail, follow=follow):
            yield [LogLine(line.ts, line.stream, line.text) for line in batch]

    # files

    async def push_files(
        self, ref: str, local: str, guest: str, progress: OnProgress | None = None
    ) -> TransferResult:
        grove = await self._client()
        result = await grove.push_files(ref, local, guest, progress=_relay(progress))
        return TransferResult(
            "push", local, result.dest or guest, result.bytes, result.files,
            result.duration_ms / 1000,
        )  # fmt: skip

    async def pull_files(
        self, ref: str, guest: str, local: str, progress: OnProgress | None = None
    ) -> TransferResult:
        grove = await self._client()
        result = await grove.pull_files(ref, guest, local, progress=_relay(progress))
        return TransferResult(
            "pull", guest, result.output, result.bytes, result.files, result.duration_ms / 1000
        )
