"""EngineGateway over grpc.aio on the engine's unix socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import psutil

from engine.api import grove_pb2 as pb
from engine.api import grove_pb2_grpc as pb_grpc
from engine.client import grove_error, socket_alive, start_engine
from engine.config import Paths
from engine.errors import GroveError
from tui.engine.gateway import ShellSession, not_supported
from tui.models import (
    EngineInfo,
    EnvironmentInfo,
    EventInfo,
    ExecResult,
    HostTotals,
    LineageNode,
    LogLine,
    MeterSample,
    PullUpdate,
    SandboxInfo,
    SandboxMeter,
    ServiceInfo,
    ShellInfo,
)

_OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
]
QUICK_TIMEOUT = 10.0


def sandbox_info(s: Any) -> SandboxInfo:
    return SandboxInfo(
        id=s.id,
        name=s.name,
        environment=s.environment,
        phase=s.phase,
        vcpus=s.vcpus,
        mem_mib=s.mem_mib,
        pid=s.pid or None,
        created_at=s.created_at,
        parent_id=s.parent_id,
        template_id=s.template_id,
        error=s.error,
        has_secrets=s.has_secrets,
    )


def environment_info(e: Any) -> EnvironmentInfo:
    return EnvironmentInfo(
        name=e.name,
        description=e.description,
        cached=e.cached,
        template_ready=e.template_ready,
        size_bytes=e.size_bytes or None,
    )


def _opt(message: Any, name: str) -> Any:
    """A proto3 `optional` field: None when the engine has no datum (shown '-', never 0)."""
    return getattr(message, name) if message.HasField(name) else None


def sandbox_meter(m: Any, with_time: bool = False) -> SandboxMeter:
    return SandboxMeter(
        sandbox_id=m.id,
        unique_mem=_opt(m, "unique_mem_bytes"),
        shared_mem=_opt(m, "shared_mem_bytes"),
        vmm_overhead=_opt(m, "vmm_overhead_bytes"),
        unique_disk=_opt(m, "unique_disk_bytes"),
        shared_disk=_opt(m, "shared_disk_bytes"),
        cpu_percent=_opt(m, "cpu_percent"),
        sampled_at=(m.sampled_at or None) if with_time else None,
    )


def meter_sample(reply: Any) -> MeterSample:
    sandboxes = tuple(sandbox_meter(m) for m in reply.sandboxes)
    h = reply.host
    host = HostTotals(
        mem_naive=_opt(h, "naive_mem_bytes"),
        mem_cow=_opt(h, "cow_aware_mem_bytes"),
        mem_saved=_opt(h, "saved_mem_bytes"),
        template_mem=_opt(h, "template_mem_bytes"),
        disk_naive=_opt(h, "naive_disk_bytes"),
        disk_cow=_opt(h, "cow_aware_disk_bytes"),
        cpu_percent=_opt(h, "cpu_percent"),
        cpu_count=_opt(h, "cpu_count"),
        mem_total=_opt(h, "mem_total_bytes"),
    )
    return MeterSample(ts=reply.sampled_at, sandboxes=sandboxes, host=host)


def shell_info(i: Any) -> ShellInfo:
    return ShellInfo(
        sandbox_id=i.sandbox_id,
        shell_id=i.shell_id,
        state=i.state,
        argv=tuple(i.argv),
        created_at=i.created_at,
        viewers=i.viewers,
        exit_code=_opt(i, "exit_code"),
    )


def service_info(i: Any) -> ServiceInfo:
    return ServiceInfo(
        sandbox_id=i.sandbox_id,
        name=i.name,
        state=i.state,
        ready=i.ready,
        pid=i.pid or None,
        argv=tuple(i.argv),
        probe=i.probe,
        restarts=i.restarts,
        error=i.error,
        ports=tuple(f"{p.host}:{p.host_port}->{p.guest_port}" for p in i.published_ports),
    )


class GrpcShell:
    """A guest PTY over the bidirectional Shell stream.

    Closing detaches: the engine keeps the shell running in the guest, as a terminal
    multiplexer would, so it survives the dashboard.
    """

    def __init__(self, call: Any, info: ShellInfo) -> None:
        self._call = call
        self.info = info
        self._exit_code: int | None = None
        self._closed = False

    @property
    def shell_id(self) -> str:
        return self.info.shell_id

    @classmethod
    async def open(cls, stub: Any, ref: str, cols: int, rows: int, shell_id: str = "") -> GrpcShell:
        call = stub.Shell()
        try:
            request = pb.ShellOpenRequest(sandbox=ref, cols=cols, rows=rows, shell_id=shell_id)
            await call.write(pb.ShellInput(open=request))
            first = await call.read()
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise not_supported("interactive shells") from None
            raise grove_error(exc) from None
        if first is grpc.aio.EOF or first.WhichOneof("kind") != "opened":
            call.cancel()
            raise GroveError("rpc_failed", "the engine did not open a shell", "see the engine log")
        return cls(call, shell_info(first.opened))

    async def output(self) -> AsyncIterator[bytes]:
        try:
            while True:
                message = await self._call.read()
                if message is grpc.aio.EOF:
                    return
                kind = message.WhichOneof("kind")
                if kind == "output":
                    yield message.output
                elif kind == "exit":
                    self._exit_code = _opt(message.exit, "exit_code")
                    return
        except grpc.RpcError as exc:
            if self._closed or exc.code() == grpc.StatusCode.CANCELLED:
                return
            raise grove_error(exc) from None

    @property
    def exit_code(self) -> int | None:
        return self._exit_code

    async def _send(self, message: Any) -> None:
        if self._closed:
            return
        try:
            await self._call.write(message)
        except (grpc.RpcError, grpc.aio.UsageError, RuntimeError):
            self._closed = True  # the stream ended; output() reports why

    async def write(self, data: bytes) -> None:
        await self._send(pb.ShellInput(stdin=data))

    async def resize(self, cols: int, rows: int) -> None:
        await self._send(pb.ShellInput(resize=pb.ShellResize(cols=cols, rows=rows)))

    async def close(self) -> None:
        if not self._closed:
            await self._send(pb.ShellInput(detach=True))
            self._closed = True
        self._call.cancel()


class GrpcGateway:
    """Talks to the local engine; starts it on demand like the CLI does."""

    def __init__(self, paths: Paths | None = None, autostart: bool = True) -> None:
        self.paths = paths or Paths.from_env()
        self.autostart = autostart
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    @property
    def description(self) -> str:
        return str(self.paths.socket)

    async def connect(self) -> None:
        if self._stub is not None and await asyncio.to_thread(socket_alive, self.paths):
            return
        if not await asyncio.to_thread(socket_alive, self.paths):
            if not self.autostart:
                raise GroveError(
                    "engine_unreachable",
                    f"no engine is running at {self.paths.socket}",
                    "start it with 'grove engine start'",
                )
            # start_engine blocks while the daemon comes up: keep the UI loop free.
            await asyncio.to_thread(start_engine, self.paths)
        await self.close()
        self._channel = grpc.aio.insecure_channel(f"unix:{self.paths.socket}", options=_OPTIONS)
        self._stub = pb_grpc.EngineStub(self._channel)  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()

    async def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        if self._stub is None:
            await self.connect()
        try:
            return await getattr(self._stub, method)(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise grove_error(exc) from None

    async def _stream(self, method: str, request: Any) -> AsyncIterator[Any]:
        if self._stub is None:
            await self.connect()
        call = getattr(self._stub, method)(request)
        try:
            async for message in call:
                yield message
        except grpc.RpcError as exc:
            raise grove_error(exc) from None
        finally:
            call.cancel()

    async def status(self) -> EngineInfo:
        s = await self._call("Status", pb.Empty(), timeout=QUICK_TIMEOUT)
        # Local-first: the engine runs on this host, so the host figures come from here.
        return EngineInfo(
            pid=s.pid,
            accelerator=s.accelerator,
            accelerator_reason=s.accelerator_reason,
            home=s.home,
            version=s.version,
            started_at=s.started_at,
            sandboxes_running=s.sandboxes_running,
            host_cpus=psutil.cpu_count(),
            host_mem_bytes=psutil.virtual_memory().total,
        )

    async def list_environments(self) -> list[EnvironmentInfo]:
        reply = await self._call("ListEnvironments", pb.Empty(), timeout=QUICK_TIMEOUT)
        return [environment_info(e) for e in reply.environments]

    async def pull_environment(self, name: str, warm: bool = True) -> AsyncIterator[PullUpdate]:
        async for update in self._stream("PullEnvironment", pb.PullRequest(name=name, warm=warm)):
            yield PullUpdate(
                stage=update.stage,
                fraction=None if update.fraction < 0 else update.fraction,
                done=update.done,
                cache_hit=update.cache_hit,
            )

    async def list_sandboxes(self, include_terminated: bool = False) -> list[SandboxInfo]:
        reply = await self._call(
            "ListSandboxes", pb.ListSandboxesRequest(all=include_terminated), timeout=QUICK_TIMEOUT
        )
        return [sandbox_info(s) for s in reply.sandboxes]

    async def create_sandbox(
        self, environment: str, name: str = "", vcpus: int = 0, mem_mib: int = 0
    ) -> SandboxInfo:
        request = pb.CreateSandboxRequest(
            environment=environment, name=name, vcpus=vcpus, mem_mib=mem_mib
        )
        return sandbox_info(await self._call("CreateSandbox", request))

    async def stop_sandbox(self, ref: str) -> SandboxInfo:
        return sandbox_info(await self._call("StopSandbox", pb.SandboxRef(ref=ref)))

    async def start_sandbox(self, ref: str) -> SandboxInfo:
        return sandbox_info(await self._call("StartSandbox", pb.SandboxRef(ref=ref)))

    async def terminate_sandbox(self, ref: str) -> SandboxInfo:
        return sandbox_info(await self._call("TerminateSandbox", pb.SandboxRef(ref=ref)))

    async def exec_capture(
        self, ref: str, argv: Sequence[str], timeout_s: float | None = None
    ) -> ExecResult:
        if self._stub is None:
            await self.connect()
        call = self._stub.Exec()
        stdout, stderr = bytearray(), bytearray()
        try:
            start = pb.ExecStart(sandbox=ref, argv=list(argv), timeout_s=timeout_s or 0)
            await call.write(pb.ExecInput(start=start))
            await call.done_writing()
            async for out in call:
                kind = out.WhichOneof("kind")
                if kind == "stdout":
                    stdout += out.stdout
                elif kind == "stderr":
                    stderr += out.stderr
                elif kind == "exit":
                    return ExecResult(
                        out.exit.exit_code, bytes(stdout), bytes(stderr), out.exit.duration_ms
                    )
        except grpc.RpcError as exc:
            raise grove_error(exc) from None
        raise GroveError("rpc_failed", "exec ended without an exit status", "see the engine log")

    async def events(
        self, sandbox: str, follow: bool = True, after: int = 0
    ) -> AsyncIterator[EventInfo]:
        request = pb.EventsRequest(sandbox=sandbox, follow=follow, after=after)
        async for e in self._stream("SandboxEvents", request):
            try:
                detail = json.loads(e.detail_json) if e.detail_json else {}
            except ValueError:
                detail = {"raw": e.detail_json}
            yield EventInfo(seq=e.seq, sandbox_id=e.sandbox_id, ts=e.ts, kind=e.kind, detail=detail)

    # Newer engine features: used when this build's API has them and the engine answers;
    # otherwise not_supported(), which the dashboard shows as 'not available yet'.

    async def _optional(self, method: str, message: str, feature: str, **fields: Any) -> Any:
        if self._stub is None:
            await self.connect()
        request_type = getattr(pb, message, None)
        if request_type is None or not hasattr(self._stub, method):
            raise not_supported(feature)
        try:
            return await getattr(self._stub, method)(request_type(**fields))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:  # an older engine
                raise not_supported(feature) from None
            raise grove_error(exc) from None

    async def lineage(self) -> list[LineageNode]:
        reply = await self._optional("Lineage", "SandboxRef", "the lineage tree", ref="")
        nodes: list[LineageNode] = []

        def walk(node: Any, parent: str) -> None:
            nodes.append(
                LineageNode(
                    id=node.id,
                    kind=node.kind,
                    label=node.name or node.id,
                    parent_id=parent,
                    phase=node.phase,
                )
            )
            for child in node.children:
                walk(child, node.id)

        for root in reply.roots:
            walk(root, "")
        return nodes

    async def fork(self, ref: str, count: int = 1, name_prefix: str = "") -> list[SandboxInfo]:
        reply = await self._optional(
            "ForkSandbox",
            "ForkRequest",
            "snapshot-fork",
            sandbox=ref,
            replicas=count,
            name_prefix=name_prefix,
        )
        return [sandbox_info(child) for child in reply.children]

    async def reset_sandbox(self, ref: str, snapshot: str = "") -> SandboxInfo:
        reply = await self._optional(
            "ResetSandbox", "ResetRequest", "reset", sandbox=ref, snapshot=snapshot
        )
        return sandbox_info(reply)

    async def metering_history(self, ref: str) -> list[SandboxMeter]:
        reply = await self._optional("MeteringHistory", "SandboxRef", "metering history", ref=ref)
        return [sandbox_meter(m, with_time=True) for m in reply.samples]

    async def snapshot(self, ref: str, name: str) -> LineageNode:
        snap = await self._optional(
            "CreateSnapshot", "SnapshotRequest", "snapshots", sandbox=ref, name=name
        )
        return LineageNode(
            id=snap.id, kind="snapshot", label=snap.name or snap.id, parent_id=snap.source
        )

    async def metering_stream(self, interval_s: float = 1.0) -> AsyncIterator[MeterSample]:
        if self._stub is None:
            await self.connect()
        request_type = getattr(pb, "TopRequest", None)
        if request_type is None or not hasattr(self._stub, "WatchMetering"):
            raise not_supported("metering")
        call = self._stub.WatchMetering(request_type(interval_s=interval_s))
        try:
            async for reply in call:
                yield meter_sample(reply)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise not_supported("metering") from None
            raise grove_error(exc) from None
        finally:
            call.cancel()

    # Shells and services.

    async def open_shell(self, ref: str, cols: int, rows: int, shell_id: str = "") -> ShellSession:
        if self._stub is None:
            await self.connect()
        if not hasattr(pb, "ShellInput") or not hasattr(self._stub, "Shell"):
            raise not_supported("interactive shells")
        return await GrpcShell.open(self._stub, ref, cols, rows, shell_id)

    async def list_shells(self, ref: str) -> list[ShellInfo]:
        reply = await self._optional("ShellList", "SandboxRef", "interactive shells", ref=ref)
        return [shell_info(i) for i in reply.shells]

    async def list_services(self, ref: str) -> list[ServiceInfo]:
        reply = await self._optional("ServiceList", "SandboxRef", "services", ref=ref)
        return [service_info(i) for i in reply.services]

    async def start_service(
        self, ref: str, name: str, argv: Sequence[str], probe: tuple[str, str] | None = None
    ) -> ServiceInfo:
        ready = pb.ReadyProbe(kind=probe[0], target=probe[1]) if probe else None
        reply = await self._optional(
            "ServiceStart",
            "ServiceStartRequest",
            "services",
            sandbox=ref,
            name=name,
            argv=list(argv),
            ready=ready,
        )
        return service_info(reply)

    async def stop_service(self, ref: str, name: str) -> ServiceInfo:
        reply = await self._optional(
            "ServiceStop", "ServiceRef", "services", sandbox=ref, name=name
        )
        return service_info(reply)

    async def service_logs(
        self, ref: str, name: str, follow: bool = True, tail: int = 500
    ) -> AsyncIterator[list[LogLine]]:
        if self._stub is None:
            await self.connect()
        if not hasattr(self._stub, "ServiceLogs"):
            raise not_supported("service logs")
        request = pb.ServiceLogsRequest(sandbox=ref, name=name, tail=tail, follow=follow)
        call = self._stub.ServiceLogs(request)
        try:
            async for batch in call:
                yield [LogLine(line.ts, line.stream, line.text) for line in batch.lines]
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise not_supported("service logs") from None
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            raise grove_error(exc) from None
        finally:
            call.cancel()
