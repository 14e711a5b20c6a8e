"""The gRPC servicer: validates requests, calls the engine, maps GroveError to statuses."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from engine.api import convert, inventory, metering
from engine.api import files as files_api
from engine.api import grove_pb2 as pb
from engine.api import grove_pb2_grpc as pb_grpc
from engine.api import services as services_api
from engine.api import shells as shells_api
from engine.api.status import abort as _abort
from engine.api.version import API_VERSION
from engine.errors import GroveError, invalid
from engine.net import policy as net_policy
from engine.sandbox import ttl

if TYPE_CHECKING:
    from engine.daemon import Engine

T = TypeVar("T")


def unary(
    fn: Callable[..., Awaitable[T]],
) -> Callable[..., Awaitable[T]]:
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> T:
        try:
            return await fn(self, request, context)
        except (GroveError, Exception) as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            await _abort(context, exc)
            raise  # unreachable: abort raises

    return wrapper


def _policy(text: str, required: bool = False) -> str:
    """A network policy as the request gives it, refused here when it does not parse, before
    any sandbox is touched; "" (the default, or inherit) passes unless one is required."""
    if text or required:
        net_policy.parse(text)
    return text


def _ttl(request: pb.CreateSandboxRequest | pb.ForkRequest) -> float | None:
    """A new sandbox's TTL as asked: None (unset) for the engine's default, 0 for none;
    refused before anything is created when out of range."""
    if not request.HasField("ttl_s"):
        return None
    return ttl.check(request.ttl_s, allow_zero=True, what="ttl_s")


class EngineService(pb_grpc.EngineServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @unary
    async def Status(self, request: pb.Empty, context: Any) -> pb.EngineStatus:
        return pb.EngineStatus(
            **asdict(self.engine.status()), api_version=API_VERSION, limits=convert.limits()
        )

    @unary
    async def Shutdown(self, request: pb.Empty, context: Any) -> pb.Empty:
        self.engine.request_shutdown()
        return pb.Empty()

    # environments

    @unary
    async def ListEnvironments(self, request: pb.Empty, context: Any) -> pb.EnvironmentList:
        found = await self.engine.environments.list()
        return pb.EnvironmentList(environments=[convert.environment(e) for e in found])

    async def PullEnvironment(
        self, request: pb.PullRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.PullProgress]:
        try:
            async for update in self.engine.environments.pull(
                request.name, request.force, request.warm
            ):
                yield convert.pull_update(update)
        except Exception as exc:
            await _abort(context, exc)

    @unary
    async def InspectEnvironment(self, request: pb.EnvironmentRef, context: Any) -> pb.Environment:
        return convert.environment(await self.engine.environments.inspect(request.name))

    @unary
    async def PruneEnvironments(self, request: pb.Empty, context: Any) -> pb.PruneReply:
        pruned = await self.engine.environments.prune()
        return pb.PruneReply(bytes_freed=pruned.bytes_freed, removed=pruned.removed)

    # sandboxes

    @unary
    async def CreateSandbox(self, request: pb.CreateSandboxRequest, context: Any) -> pb.Sandbox:
        record = await self.engine.sandboxes.create(
            request.environment,
            name=request.name,
            vcpus=request.vcpus,
            mem_mib=request.mem_mib,
            secrets=dict(request.secrets),
            from_snapshot=request.from_snapshot,
            network=_policy(request.network),
            ttl_s=_ttl(request),
        )
        return convert.sandbox(record)

    @unary
    async def ListSandboxes(self, request: pb.ListSandboxesRequest, context: Any) -> pb.SandboxList:
        records = self.engine.sandboxes.records(include_terminated=request.all)
        return pb.SandboxList(sandboxes=[convert.sandbox(r) for r in records])

    @unary
    async def GetSandbox(self, request: pb.SandboxRef, context: Any) -> pb.Sandbox:
        return convert.sandbox(self.engine.sandboxes.get(request.ref))

    @unary
    async def StopSandbox(self, request: pb.SandboxRef, context: Any) -> pb.Sandbox:
        return convert.sandbox(await self.engine.sandboxes.stop(request.ref))

    @unary
    async def StartSandbox(self, request: pb.SandboxRef, context: Any) -> pb.Sandbox:
        return convert.sandbox(await self.engine.sandboxes.start(request.ref))

    @unary
    async def TerminateSandbox(self, request: pb.SandboxRef, context: Any) -> pb.Sandbox:
        return convert.sandbox(await self.engine.sandboxes.terminate(request.ref))

    @unary
    async def SetTtl(self, request: pb.TtlRequest, context: Any) -> pb.Sandbox:
        if request.clear:
            record = await self.engine.sandboxes.set_ttl(request.sandbox, None)
        else:
            seconds = ttl.check(request.ttl_s, what="ttl_s")  # > 0: a clear is said so
            record = await self.engine.sandboxes.set_ttl(request.sandbox, seconds)
        return convert.sandbox(record)

    @unary
    async def PingAgent(self, request: pb.SandboxRef, context: Any) -> pb.PingReply:
        seconds = await self.engine.sandboxes.ping(request.ref)
        return pb.PingReply(round_trip_ms=seconds * 1000)

    @unary
    async def SandboxNetwork(self, request: pb.NetworkRequest, context: Any) -> pb.NetworkInfo:
        sandboxes = self.engine.sandboxes
        if request.HasField("policy"):
            info = await sandboxes.set_network(request.sandbox, _policy(request.policy, True))
        else:
            info = sandboxes.network_info(request.sandbox)
        return convert.network(info)

    async def Exec(
        self,
        request_iterator: AsyncIterator[pb.ExecInput],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.ExecOutput]:
        requests = aiter(request_iterator)
        try:
            first = await anext(requests, None)
            if first is None or first.WhichOneof("kind") != "start":
                raise invalid("exec stream must begin with a start message", "upgrade the client")
            start = first.start
            record, handle = await self.engine.sandboxes.exec(
                start.sandbox,
                list(start.argv),
                env=dict(start.env),
                cwd=start.cwd or None,
                timeout_s=start.timeout_s or None,
                stdin=start.stdin,
                secret_env=list(start.secret_env),
            )
        except Exception as exc:
            await _abort(context, exc)
            return
        # Per stream: a secret split across two chunks is still caught.
        redact = {1: self.engine.redactor.stream(), 2: self.engine.redactor.stream()}
        yield pb.ExecOutput(started_pid=handle.pid)
        failure: list[GroveError] = []

        async def pump_input() -> None:
            try:
                async for message in requests:
                    kind = message.WhichOneof("kind")
                    if kind == "stdin":
                        await handle.write_stdin(message.stdin)
                    elif kind == "stdin_eof":
                        await handle.close_stdin()
                    elif kind == "signal":
                        await handle.signal(shells_api.signal_name(message.signal))
            except GroveError as exc:
                # A message the engine cannot take: the stream ends with it, the process too.
                failure.append(exc)
                with contextlib.suppress(Exception):
                    await handle.signal("KILL")

        pump = asyncio.create_task(pump_input())
        finished = False
        try:
            async for stream, data in handle.output():
                shown = redact[2 if stream == 2 else 1].feed(data)
                if not shown:
                    continue
                if stream == 2:
                    yield pb.ExecOutput(stderr=shown)
                else:
                    yield pb.ExecOutput(stdout=shown)
            if tail := redact[1].flush():
                yield pb.ExecOutput(stdout=tail)
            if tail := redact[2].flush():
                yield pb.ExecOutput(stderr=tail)
            status = await handle.wait()
            finished = True
            await self.engine.sandboxes.exec_ended(record.id, status.exit_code, status.duration_ms)
            if failure:
                raise failure[0]
            failed = status.exit_code != 0 or status.timed_out
            note = await self.engine.sandboxes.network_hint(record.id) if failed else ""
            yield pb.ExecOutput(
                exit=pb.ExecExit(
                    exit_code=status.exit_code if status.exit_code is not None else -1,
                    signal=str(status.signal or ""),
                    timed_out=status.timed_out,
                    duration_ms=status.duration_ms,
                    network_note=note,
                )
            )
        except Exception as exc:
            await _abort(context, exc)
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
            if not finished:
                # The client went away: its process group must not outlive it.
                with contextlib.suppress(Exception):
                    await handle.signal("KILL")

    async def SandboxEvents(
        self, request: pb.EventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.SandboxEvent]:
        try:
            if request.after < 0:
                raise invalid(
                    f"invalid event position {request.after}",
                    "pass 0 for every event, or the seq of the last one seen",
                )
            record = self.engine.sandboxes.get(request.sandbox)
            async for event in self.engine.events.follow(record.id, request.after, request.follow):
                yield convert.event(event)
        except Exception as exc:
            await _abort(context, exc)

    async def WatchInventory(
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.InventoryUpdate]:
        try:
            async for update in inventory.watch(self.engine, request.after, request.replay):
                yield update
        except Exception as exc:
            await _abort(context, exc)

    # fork, snapshots, lineage

    @unary
    async def ForkSandbox(self, request: pb.ForkRequest, context: Any) -> pb.ForkReply:
        forked = await self.engine.sandboxes.fork(
            request.sandbox,
            replicas=request.replicas or 1,
            name_prefix=request.name_prefix,
            allow_secrets=request.allow_secrets,
            network=_policy(request.network),
            memory=request.memory,
            ttl_s=_ttl(request),
        )
        return pb.ForkReply(
            source=forked.source.id,
            snapshot=forked.template.id,
            children=[convert.sandbox(c) for c in forked.children],
            paused_ms=forked.paused_ms,
            memory=forked.memory,
        )

    @unary
    async def CreateSnapshot(self, request: pb.SnapshotRequest, context: Any) -> pb.Snapshot:
        if not request.name:
            raise invalid(
                "no snapshot name given", "pass a NAME, e.g. 'grove snapshot create ID base'"
            )
        template = await self.engine.sandboxes.snapshot(request.sandbox, request.name)
        return convert.snapshot(template, [])

    @unary
    async def ListSnapshots(self, request: pb.SandboxRef, context: Any) -> pb.SnapshotList:
        sandboxes = self.engine.sandboxes
        return pb.SnapshotList(
            snapshots=[
                convert.snapshot(t, sandboxes.snapshot_dependents(t.id))
                for t in sandboxes.snapshots(request.ref)
            ]
        )

    @unary
    async def DeleteSnapshot(self, request: pb.SnapshotRef, context: Any) -> pb.Snapshot:
        return convert.snapshot(self.engine.sandboxes.delete_snapshot(request.name), [])

    @unary
    async def ResetSandbox(self, request: pb.ResetRequest, context: Any) -> pb.Sandbox:
        record = await self.engine.sandboxes.reset(request.sandbox, request.snapshot)
        return convert.sandbox(record)

    @unary
    async def Lineage(self, request: pb.SandboxRef, context: Any) -> pb.LineageReply:
        roots = self.engine.lineage()
        if request.ref:
            ref = (
                self.engine.sandboxes.get(request.ref).id
                if not any(r.find(request.ref) for r in roots)
                else request.ref
            )
            found = [n for n in (r.find(ref) for r in roots) if n is not None]
            roots = found[:1]
        return pb.LineageReply(roots=[convert.lineage(r) for r in roots])

    @unary
    async def DiffSandbox(self, request: pb.DiffRequest, context: Any) -> pb.DiffReply:
        found = await self.engine.diff(
            request.sandbox, request.against_snapshot, list(request.paths)
        )
        return convert.diff(found)

    # metering

    @unary
    async def Top(self, request: pb.TopRequest, context: Any) -> pb.TopReply:
        return await metering.top_reply(self.engine, request.all)

    async def WatchMetering(
        self, request: pb.TopRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.TopReply]:
        try:
            async for reply in metering.watch(self.engine, request.all, request.interval_s):
                yield reply
        except Exception as exc:
            await _abort(context, exc)

    @unary
    async def MeteringHistory(self, request: pb.SandboxRef, context: Any) -> pb.HistoryReply:
        return metering.history_reply(self.engine, request.ref)

    # shells

    async def Shell(
        self,
        request_iterator: AsyncIterator[pb.ShellInput],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.ShellOutput]:
        try:
            async for message in shells_api.stream(self.engine.sessions.shells, request_iterator):
                yield message
        except Exception as exc:
            await _abort(context, exc)

    @unary
    async def ShellOpen(self, request: pb.ShellOpenRequest, context: Any) -> pb.ShellInfo:
        return shells_api.info(await shells_api.open_or_find(self.engine.sessions.shells, request))

    @unary
    async def ShellRead(self, request: pb.ShellReadRequest, context: Any) -> pb.ShellReadReply:
        return await shells_api.read(self.engine.sessions.shells, request)

    @unary
    async def ShellWrite(self, request: pb.ShellWriteRequest, context: Any) -> pb.ShellInfo:
        return await shells_api.write(self.engine.sessions.shells, request)

    @unary
    async def ShellSignal(self, request: pb.ShellSignalRequest, context: Any) -> pb.ShellInfo:
        return await shells_api.signal(self.engine.sessions.shells, request)

    @unary
    async def ShellClose(self, request: pb.ShellRef, context: Any) -> pb.ShellInfo:
        shells = self.engine.sessions.shells
        return shells_api.info(await shells.close(request.sandbox, request.shell_id))

    @unary
    async def ShellList(self, request: pb.SandboxRef, context: Any) -> pb.ShellListReply:
        shells = await self.engine.sessions.shells.in_sandbox(request.ref)
        return pb.ShellListReply(shells=[shells_api.info(s) for s in shells])

    # services

    @unary
    async def ServiceStart(self, request: pb.ServiceStartRequest, context: Any) -> pb.ServiceInfo:
        spec = services_api.spec(request)
        return services_api.info(await self.engine.sessions.services.start(request.sandbox, spec))

    @unary
    async def ServiceStop(self, request: pb.ServiceRef, context: Any) -> pb.ServiceInfo:
        service = await self.engine.sessions.services.stop(request.sandbox, request.name)
        return services_api.info(service)

    @unary
    async def ServiceStatus(self, request: pb.ServiceRef, context: Any) -> pb.ServiceInfo:
        service = await self.engine.sessions.services.status(request.sandbox, request.name)
        return services_api.info(service)

    @unary
    async def ServiceList(self, request: pb.SandboxRef, context: Any) -> pb.ServiceListReply:
        services = await self.engine.sessions.services.in_sandbox(request.ref)
        return pb.ServiceListReply(services=[services_api.info(s) for s in services])

    async def ServiceLogs(
        self, request: pb.ServiceLogsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.ServiceLogBatch]:
        try:
            async for batch in services_api.logs(self.engine.sessions.services, request):
                yield batch
        except Exception as exc:
            await _abort(context, exc)

    # files

    @unary
    async def FileList(self, request: pb.FileListRequest, context: Any) -> pb.FileListReply:
        found = await self.engine.files.list(request.sandbox, request.path, request.recursive)
        return files_api.entries(found)

    @unary
    async def FileRead(self, request: pb.FileReadRequest, context: Any) -> pb.FileReadReply:
        result = await self.engine.files.read(request.sandbox, request.path, request.max_bytes)
        # What a read shows is redacted like exec output (a pull copies bytes as they are).
        data = self.engine.redactor.data(result.data)
        return files_api.read_reply(dataclasses.replace(result, data=data))

    async def Push(
        self,
        request_iterator: AsyncIterator[pb.PushInput],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.PushReply:
        try:
            return await files_api.push(self.engine.files, request_iterator)
        except Exception as exc:
            await _abort(context, exc)
            raise  # unreachable: abort raises

    async def Pull(
        self, request: pb.FilePullRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.FilePullOutput]:
        try:
            async for message in files_api.pull(self.engine.files, request):
                yield message
        except Exception as exc:
            await _abort(context, exc)

    @unary
    async def ApplyPatch(self, request: pb.PatchRequest, context: Any) -> pb.PatchReply:
        result = await self.engine.files.apply_patch(
            request.sandbox, request.patch, request.dry_run
        )
        return pb.PatchReply(added=result.added, modified=result.modified, deleted=result.deleted)

    # offline disks

    @unary
    async def DiskList(self, request: pb.DiskListRequest, context: Any) -> pb.FileListReply:
        found = await self.engine.disks.list(request.target, request.path, request.recursive)
        return files_api.entries(found)

    @unary
    async def DiskRead(self, request: pb.DiskReadRequest, context: Any) -> pb.FileReadReply:
        result = await self.engine.disks.read(request.target, request.path, request.max_bytes)
        return files_api.read_reply(result)

    async def DiskExport(
        self, request: pb.DiskExportRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.DiskExportOutput]:
        try:
            async for item in self.engine.disks.export(request.target, request.format or "qcow2"):
                yield files_api.export_output(item)
        except Exception as exc:
            await _abort(context, exc)
