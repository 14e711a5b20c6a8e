"""AsyncGrove: the typed asyncio client of the engine API, the one place callers meet gRPC.

Every RPC of grove.proto has a method here (RPC_METHODS maps them, and a test keeps the map
complete). Methods take plain Python values and return the frozen dataclasses of
engine.client.models; every failure is a GroveError(code, message, remedy).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio

from engine.api import grove_pb2 as pb
from engine.api import grove_pb2_grpc as pb_grpc
from engine.api import wire
from engine.api.files_client import AsyncSandboxFiles, FileMethods
from engine.api.version import API_VERSION
from engine.client import hosts, local
from engine.client import models as m
from engine.client.hosts import SshTarget
from engine.client.ssh import SshTunnel, StateCallback
from engine.config import Paths
from engine.errors import GroveError

T = TypeVar("T")

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
]
# (Not grpc.min_reconnect_backoff_ms: that is the connect timeout, and a dial-stdio bridge
# needs a second to start its far end.)
REMOTE_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 300),
    ("grpc.max_reconnect_backoff_ms", 3000),
]
#: Calls that only read engine state answer within this, or the engine is in trouble.
QUICK_TIMEOUT = 10.0

#: RPC name in grove.proto -> the client method that makes it.
RPC_METHODS = {
    "Status": "status",
    "Shutdown": "shutdown",
    "ListEnvironments": "environments",
    "PullEnvironment": "pull",
    "InspectEnvironment": "environment",
    "PruneEnvironments": "prune",
    "CreateSandbox": "create",
    "ListSandboxes": "sandboxes",
    "GetSandbox": "get",
    "StopSandbox": "stop",
    "StartSandbox": "start",
    "TerminateSandbox": "terminate",
    "SetTtl": "set_ttl",
    "PingAgent": "ping",
    "SandboxNetwork": "network",
    "Exec": "exec_stream",
    "SandboxEvents": "events",
    "WatchInventory": "watch_inventory",
    "ForkSandbox": "fork",
    "CreateSnapshot": "snapshot",
    "ListSnapshots": "snapshots",
    "DeleteSnapshot": "delete_snapshot",
    "ResetSandbox": "reset",
    "Lineage": "lineage",
    "DiffSandbox": "diff",
    "Top": "top",
    "WatchMetering": "watch_metering",
    "MeteringHistory": "metering_history",
    "Shell": "shell",
    "ShellOpen": "shell_open",
    "ShellRead": "shell_read",
    "ShellWrite": "shell_write",
    "ShellSignal": "shell_signal",
    "ShellClose": "shell_close",
    "ShellList": "shells",
    "ServiceStart": "service_start",
    "ServiceStop": "service_stop",
    "ServiceStatus": "service_status",
    "ServiceList": "services",
    "ServiceLogs": "service_logs",
    "FileList": "file_list",
    "FileRead": "file_read",
    "Push": "push_files",
    "Pull": "pull_files",
    "ApplyPatch": "apply_patch",
    "DiskList": "disk_list",
    "DiskRead": "disk_read",
    "DiskExport": "disk_export",
}


def grove_error(exc: grpc.RpcError) -> GroveError:
    """An RPC failure as the GroveError the engine sent, or one that says where it broke."""
    # Both grpc.RpcError kinds (sync and aio) carry code() and details().
    code: grpc.StatusCode | None = exc.code() if hasattr(exc, "code") else None
    details: str = (exc.details() if hasattr(exc, "details") else "") or str(exc)
    try:
        return GroveError.from_json(details)
    except (ValueError, KeyError, TypeError):
        pass
    if code == grpc.StatusCode.UNAVAILABLE:
        return GroveError(
            "engine_unreachable",
            f"lost the engine connection: {details}",
            "check 'grove engine status'",
        )
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return GroveError(
            "api_mismatch",
            f"the engine does not serve this call: {details}",
            "run the same Grove version on both ends ('grove engine stop' restarts it)",
        )
    if code == grpc.StatusCode.CANCELLED:
        return GroveError("cancelled", "the call was cancelled", "")
    return GroveError("rpc_failed", f"engine call failed: {details}", "see the engine log")


def version_error(info: m.EngineInfo) -> GroveError:
    return GroveError(
        "api_mismatch",
        f"the engine at {info.socket} speaks API {info.api_version} (Grove {info.version}); "
        f"this client speaks API {API_VERSION}",
        "run the same Grove version on both ends, then 'grove engine stop' to restart it",
    )


#: The largest stdin piece one ExecInput message carries.
STDIN_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Probe:
    """A service's readiness probe: file PATH, tcp HOST:PORT, http URL, or a command line."""

    kind: str
    target: str


class ExecStream:
    """A running command: iterate its output; the exit status is `exit` once it ends."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._held: m.ExecOutput | m.ExecExit | None = None
        self.pid: int | None = None
        self.exit: m.ExecExit | None = None

    async def _started(self) -> None:
        first = await self._read()
        if isinstance(first, int):
            self.pid = first
        else:  # the engine always sends the pid first; anything else is kept for output()
            self._held = first

    async def _read(self) -> m.ExecOutput | m.ExecExit | int | None:
        if self._held is not None:
            held, self._held = self._held, None
            return held
        try:
            message = await self._call.read()
        except grpc.RpcError as exc:
            raise grove_error(exc) from None
        if message is grpc.aio.EOF:
            return None
        return wire.exec_output(message)

    async def output(self) -> AsyncIterator[m.ExecOutput]:
        while True:
            item = await self._read()
            if item is None:
                break
            if isinstance(item, m.ExecExit):
                self.exit = item
                break
            if isinstance(item, m.ExecOutput):
                yield item
        if self.exit is None:
            raise GroveError(
                "rpc_failed", "exec ended without an exit status", "see the engine log"
            )

    async def result(self) -> m.ExecResult:
        out, err = bytearray(), bytearray()
        async for chunk in self.output():
            (out if chunk.stream == "stdout" else err).extend(chunk.data)
        assert self.exit is not None
        return m.ExecResult(
            exit_code=self.exit.exit_code,
            stdout=bytes(out),
            stderr=bytes(err),
            duration_ms=self.exit.duration_ms,
            signal=self.exit.signal,
            timed_out=self.exit.timed_out,
            network_note=self.exit.network_note,
        )

    async def _write(self, message: pb.ExecInput) -> None:
        try:
            await self._call.write(message)
        except grpc.RpcError as exc:
            raise grove_error(exc) from None
        except (grpc.aio.UsageError, asyncio.InvalidStateError, RuntimeError):
            pass  # the command ended already; output() has its exit

    async def write(self, data: bytes) -> None:
        # In pieces: one gRPC message is capped (4 MiB by default) and stdin may be larger.
        for start in range(0, len(data), STDIN_CHUNK):
            await self._write(pb.ExecInput(stdin=data[start : start + STDIN_CHUNK]))

    async def close_stdin(self) -> None:
        await self._write(pb.ExecInput(stdin_eof=True))

    async def signal(self, name: str) -> None:
        await self._write(pb.ExecInput(signal=name))

    def cancel(self) -> None:
        self._call.cancel()


class ShellStream:
    """An attached guest PTY. Closing detaches: the engine keeps the shell running."""

    def __init__(self, call: Any, info: m.Shell) -> None:
        self._call = call
        self.info = info
        self.exit: m.ShellExit | None = None
        self._closed = False

    async def events(self) -> AsyncIterator[bytes | m.Shell | m.ShellExit]:
        """Output bytes, a Shell on each state change, and a ShellExit at the end."""
        try:
            while True:
                message = await self._call.read()
                if message is grpc.aio.EOF:
                    return
                kind = message.WhichOneof("kind")
                if kind == "output":
                    yield message.output
                elif kind == "state":
                    self.info = wire.shell(message.state)
                    yield self.info
                elif kind == "exit":
                    self.exit = wire.shell_exit(message.exit)
                    yield self.exit
                    return
        except grpc.RpcError as exc:
            if self._closed or exc.code() == grpc.StatusCode.CANCELLED:
                return
            raise grove_error(exc) from None
        except asyncio.CancelledError:
            # detach() cancelled the call under a pending read: that is the stream's end.
            if self._closed:
                return
            raise

    async def output(self) -> AsyncIterator[bytes]:
        async for event in self.events():
            if isinstance(event, bytes):
                yield event

    async def _send(self, message: pb.ShellInput) -> None:
        if self._closed:
            return
        try:
            await self._call.write(message)
        except (grpc.RpcError, grpc.aio.UsageError, asyncio.InvalidStateError, RuntimeError):
            self._closed = True  # the stream ended; events() reports why

    async def write(self, data: bytes) -> None:
        await self._send(pb.ShellInput(stdin=data))

    async def resize(self, cols: int, rows: int) -> None:
        await self._send(pb.ShellInput(resize=pb.ShellResize(cols=cols, rows=rows)))

    async def signal(self, name: str) -> None:
        await self._send(pb.ShellInput(signal=name))

    async def detach(self) -> None:
        if not self._closed:
            await self._send(pb.ShellInput(detach=True))
            self._closed = True
        self._call.cancel()


class AsyncGrove(FileMethods):
    """An engine, reached over its unix socket. Make one with `await AsyncGrove.connect()`."""

    def __init__(self, socket: str, description: str = "", tunnel: SshTunnel | None = None) -> None:
        self.socket = socket
        self.description = description or socket
        self.tunnel = tunnel
        # Through a tunnel the engine may come back after a drop: look for it again soon.
        options = CHANNEL_OPTIONS + (REMOTE_OPTIONS if tunnel is not None else [])
        self._channel = grpc.aio.insecure_channel(f"unix:{socket}", options=options)
        self._stub = pb_grpc.EngineStub(self._channel)
        self.info: m.EngineInfo | None = None

    @classmethod
    async def connect(
        cls,
        paths: Paths | None = None,
        autostart: bool = True,
        check_version: bool = True,
        host: str | SshTarget | None = None,
        on_state: StateCallback | None = None,
    ) -> AsyncGrove:
        """An engine: host (an ssh:// URL or a name from 'grove host ls'); else the local one
        of paths, started on demand; with neither, GROVE_HOST, the host chosen with
        'grove host use', or the local engine of GROVE_HOME. on_state hears of a remote
        connection's drops and reconnects."""
        if isinstance(host, SshTarget):
            target: SshTarget | None = host
        elif host is None and paths is not None:
            target = None  # an explicit local home
        else:
            target = hosts.resolve(host)
        if target is None:
            paths = paths or Paths.from_env()
            # Starting the daemon blocks for a moment: not on the caller's event loop.
            await asyncio.to_thread(local.ensure_engine, paths, autostart)
            client = cls(str(paths.socket))
        else:
            tunnel = await SshTunnel.open(target, on_state)
            client = cls(tunnel.socket, description=target.label, tunnel=tunnel)
        try:
            await client.handshake(check_version)
        except BaseException:
            await client.close()
            raise
        return client

    async def handshake(self, check_version: bool = True) -> m.EngineInfo:
        """Ask the engine who it is; a different API version is one clear error."""
        self.info = await self.status()
        if check_version and self.info.api_version != API_VERSION:
            raise version_error(self.info)
        return self.info

    async def close(self) -> None:
        await self._channel.close()
        if self.tunnel is not None:
            await self.tunnel.close()

    async def __aenter__(self) -> AsyncGrove:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def files(self, ref: str) -> AsyncSandboxFiles:
        """One sandbox's files: list, read, write, push, pull, patch."""
        return AsyncSandboxFiles(self, ref)

    async def _unary(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return await method(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise grove_error(exc) from None

    async def _stream(self, method: Any, request: Any) -> AsyncIterator[Any]:
        call = method(request)
        try:
            async for message in call:
                yield message
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            raise grove_error(exc) from None
        finally:
            call.cancel()

    # engine and environments

    async def status(self) -> m.EngineInfo:
        reply = await self._unary(self._stub.Status, pb.Empty(), QUICK_TIMEOUT)
        return wire.engine_info(reply)

    async def shutdown(self) -> None:
        await self._unary(self._stub.Shutdown, pb.Empty(), QUICK_TIMEOUT)

    async def environments(self) -> list[m.Environment]:
        reply = await self._unary(self._stub.ListEnvironments, pb.Empty(), QUICK_TIMEOUT)
        return [wire.environment(e) for e in reply.environments]

    async def pull(
        self, name: str, force: bool = False, warm: bool = True
    ) -> AsyncIterator[m.PullProgress]:
        request = pb.PullRequest(name=name, force=force, warm=warm)
        async for update in self._stream(self._stub.PullEnvironment, request):
            yield wire.pull_progress(update)

    async def environment(self, name: str) -> m.Environment:
        reply = await self._unary(self._stub.InspectEnvironment, pb.EnvironmentRef(name=name))
        return wire.environment(reply)

    async def prune(self) -> m.PruneResult:
        return wire.prune_result(await self._unary(self._stub.PruneEnvironments, pb.Empty()))

    # sandboxes

    async def create(
        self,
        environment: str = "",
        name: str = "",
        vcpus: int = 0,
        mem_mib: int = 0,
        secrets: Mapping[str, str] | None = None,
        from_snapshot: str = "",
        network: str = "",
        ttl_s: float | None = None,
    ) -> m.Sandbox:
        """A running sandbox; vcpus/mem_mib 0 take the engine's defaults, network ''
        (a policy: off, published, egress or allow=HOST[:PORT],...) the engine's default.
        ttl_s: seconds until the engine terminates it (None: the engine's default,
        GROVE_DEFAULT_TTL; 0: no limit)."""
        request = pb.CreateSandboxRequest(
            environment=environment,
            name=name,
            vcpus=vcpus,
            mem_mib=mem_mib,
            secrets=dict(secrets or {}),
            from_snapshot=from_snapshot,
            network=network,
            ttl_s=ttl_s,
        )
        return wire.sandbox(await self._unary(self._stub.CreateSandbox, request))

    async def sandboxes(self, all: bool = False) -> list[m.Sandbox]:
        request = pb.ListSandboxesRequest(all=all)
        reply = await self._unary(self._stub.ListSandboxes, request, QUICK_TIMEOUT)
        return [wire.sandbox(s) for s in reply.sandboxes]

    async def get(self, ref: str) -> m.Sandbox:
        request = pb.SandboxRef(ref=ref)
        return wire.sandbox(await self._unary(self._stub.GetSandbox, request, QUICK_TIMEOUT))

    async def stop(self, ref: str) -> m.Sandbox:
        return wire.sandbox(await self._unary(self._stub.StopSandbox, pb.SandboxRef(ref=ref)))

    async def start(self, ref: str) -> m.Sandbox:
        return wire.sandbox(await self._unary(self._stub.StartSandbox, pb.SandboxRef(ref=ref)))

    async def terminate(self, ref: str) -> m.Sandbox:
        request = pb.SandboxRef(ref=ref)
        return wire.sandbox(await self._unary(self._stub.TerminateSandbox, request))

    async def set_ttl(self, ref: str, ttl_s: float | None) -> m.Sandbox:
        """Terminate the sandbox ttl_s seconds from now (> 0); None: never (clears its TTL)."""
        request = pb.TtlRequest(sandbox=ref, ttl_s=ttl_s or 0.0, clear=ttl_s is None)
        return wire.sandbox(await self._unary(self._stub.SetTtl, request, QUICK_TIMEOUT))

    async def ping(self, ref: str) -> float:
        """The engine<->agent round trip in ms."""
        reply = await self._unary(self._stub.PingAgent, pb.SandboxRef(ref=ref), QUICK_TIMEOUT)
        return float(reply.round_trip_ms)

    async def network(self, ref: str, policy: str | None = None) -> m.NetworkInfo:
        """A sandbox's network; with policy, change it first (applied live when running)."""
        request = pb.NetworkRequest(sandbox=ref, policy=policy)
        timeout = QUICK_TIMEOUT if policy is None else None
        return wire.network(await self._unary(self._stub.SandboxNetwork, request, timeout))

    async def exec_stream(
        self,
        ref: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str = "",
        timeout_s: float = 0,
        stdin: bool = False,
        deadline_s: float | None = None,
        secret_env: Sequence[str] = (),
    ) -> ExecStream:
        """Start a command and return once it runs; with stdin, write() feeds it.

        timeout_s is the command's own limit, enforced in the guest; deadline_s (None: none)
        ends the whole call client-side, even when the guest does not answer. secret_env:
        the sandbox's secrets this command gets as variables, NAME or NAME=VARIABLE each.
        """
        call = self._stub.Exec(timeout=deadline_s)
        start = pb.ExecStart(
            sandbox=ref,
            argv=list(argv),
            env=dict(env or {}),
            cwd=cwd,
            timeout_s=timeout_s,
            stdin=stdin,
            secret_env=list(secret_env),
        )
        stream = ExecStream(call)
        try:
            # The request side stays open even without stdin: signals travel on it.
            await call.write(pb.ExecInput(start=start))
        except grpc.RpcError as exc:
            raise grove_error(exc) from None
        await stream._started()
        return stream

    async def exec(
        self,
        ref: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str = "",
        timeout_s: float = 0,
        stdin: bytes | None = None,
        deadline_s: float | None = None,
        secret_env: Sequence[str] = (),
    ) -> m.ExecResult:
        """Run a command to its end and collect its output (stdin: bytes fed to it)."""
        stream = await self.exec_stream(
            ref, argv, env, cwd, timeout_s, stdin is not None, deadline_s, secret_env
        )
        if stdin is not None:
            await stream.write(stdin)
            await stream.close_stdin()
        return await stream.result()

    async def events(
        self, ref: str, follow: bool = False, after: int = 0
    ) -> AsyncIterator[m.Event]:
        request = pb.EventsRequest(sandbox=ref, follow=follow, after=after)
        async for e in self._stream(self._stub.SandboxEvents, request):
            yield wire.event(e)

    async def watch_inventory(
        self, after: int = 0, replay: int = 0
    ) -> AsyncIterator[m.InventoryUpdate]:
        """Every sandbox's lifecycle: a full update first, then one per change, until closed.

        after: the cursor of the last update seen (0: a fresh watch), to resume without losing
        or repeating an event; replay: with after 0, how many of the newest events the first
        update carries (at most engine.config.MAX_WATCH_REPLAY).
        """
        request = pb.WatchRequest(after=after, replay=replay)
        async for update in self._stream(self._stub.WatchInventory, request):
            yield wire.inventory_update(update)

    # fork, snapshots, lineage

    async def fork(
        self,
        ref: str,
        replicas: int = 1,
        name_prefix: str = "",
        allow_secrets: bool = False,
        network: str = "",
        memory: str = "",
        ttl_s: float | None = None,
    ) -> m.ForkResult:
        """Snapshot-fork a running sandbox; network '' gives each child the source's policy;
        memory: the layout ('delta', 'full'; '' or 'auto': the engine picks the cheaper);
        ttl_s: the children's TTL (None: the engine's default, 0: none)."""
        request = pb.ForkRequest(
            sandbox=ref,
            replicas=replicas,
            name_prefix=name_prefix,
            allow_secrets=allow_secrets,
            network=network,
            memory=memory,
            ttl_s=ttl_s,
        )
        return wire.fork_result(await self._unary(self._stub.ForkSandbox, request))

    async def snapshot(self, ref: str, name: str = "") -> m.Snapshot:
        request = pb.SnapshotRequest(sandbox=ref, name=name)
        return wire.snapshot(await self._unary(self._stub.CreateSnapshot, request))

    async def snapshots(self, ref: str = "") -> list[m.Snapshot]:
        """Every named snapshot, or (ref) those taken of one sandbox."""
        reply = await self._unary(self._stub.ListSnapshots, pb.SandboxRef(ref=ref), QUICK_TIMEOUT)
        return [wire.snapshot(s) for s in reply.snapshots]

    async def delete_snapshot(self, name: str) -> m.Snapshot:
        request = pb.SnapshotRef(name=name)
        return wire.snapshot(await self._unary(self._stub.DeleteSnapshot, request))

    async def reset(self, ref: str, snapshot: str = "") -> m.Sandbox:
        """Back to a named snapshot, or (snapshot '') to how the sandbox was created."""
        request = pb.ResetRequest(sandbox=ref, snapshot=snapshot)
        return wire.sandbox(await self._unary(self._stub.ResetSandbox, request))

    async def lineage(self, ref: str = "") -> list[m.LineageNode]:
        """The lineage forest: environments, snapshots and sandboxes (ref: one sandbox's tree)."""
        reply = await self._unary(self._stub.Lineage, pb.SandboxRef(ref=ref), QUICK_TIMEOUT)
        return [wire.lineage_node(n) for n in reply.roots]

    async def diff(self, ref: str, against_snapshot: str = "", paths: Sequence[str] = ()) -> m.Diff:
        request = pb.DiffRequest(sandbox=ref, against_snapshot=against_snapshot, paths=list(paths))
        return wire.diff(await self._unary(self._stub.DiffSandbox, request))

    # metering

    async def top(self, all: bool = False) -> m.MeterSample:
        request = pb.TopRequest(all=all)
        return wire.meter_sample(await self._unary(self._stub.Top, request, QUICK_TIMEOUT))

    async def watch_metering(
        self, interval_s: float = 1.0, all: bool = False
    ) -> AsyncIterator[m.MeterSample]:
        request = pb.TopRequest(all=all, interval_s=interval_s)
        async for reply in self._stream(self._stub.WatchMetering, request):
            yield wire.meter_sample(reply)

    async def metering_history(self, ref: str) -> m.MeterHistory:
        request = pb.SandboxRef(ref=ref)
        reply = await self._unary(self._stub.MeteringHistory, request, QUICK_TIMEOUT)
        return wire.meter_history(reply)

    # shells

    @staticmethod
    def _shell_request(
        ref: str, shell_id: str, cols: int, rows: int, cwd: str, shell: str, term: str,
        no_replay: bool, secret_env: Sequence[str] = (),
    ) -> pb.ShellOpenRequest:  # fmt: skip
        return pb.ShellOpenRequest(
            sandbox=ref, shell_id=shell_id, cols=cols, rows=rows, cwd=cwd, shell=shell,
            term=term, no_replay=no_replay, secret_env=list(secret_env),
        )  # fmt: skip

    async def shell(
        self,
        ref: str,
        shell_id: str = "",
        cols: int = 80,
        rows: int = 24,
        cwd: str = "",
        shell: str = "",
        term: str = "",
        no_replay: bool = False,
        secret_env: Sequence[str] = (),
    ) -> ShellStream:
        """A new shell, or (shell_id) an existing one whose scrollback is replayed first.
        secret_env: for a new one, the secrets it gets as variables (NAME or NAME=VARIABLE)."""
        request = self._shell_request(
            ref, shell_id, cols, rows, cwd, shell, term, no_replay, secret_env
        )
        call = self._stub.Shell()
        try:
            await call.write(pb.ShellInput(open=request))
            first = await call.read()
        except grpc.RpcError as exc:
            raise grove_error(exc) from None
        if not isinstance(first, pb.ShellOutput) or first.WhichOneof("kind") != "opened":
            call.cancel()
            raise GroveError("rpc_failed", "the engine did not open a shell", "see the engine log")
        return ShellStream(call, wire.shell(first.opened))

    async def shell_open(
        self,
        ref: str,
        cols: int = 80,
        rows: int = 24,
        cwd: str = "",
        shell: str = "",
        term: str = "",
        secret_env: Sequence[str] = (),
    ) -> m.Shell:
        """A shell that runs detached, driven by shell_read/shell_write (for scripts, MCP)."""
        request = self._shell_request(ref, "", cols, rows, cwd, shell, term, False, secret_env)
        return wire.shell(await self._unary(self._stub.ShellOpen, request))

    async def shell_read(
        self, ref: str, shell_id: str, cursor: int = 0, max_chars: int = 0, wait_ms: int = 0
    ) -> m.ShellRead:
        request = pb.ShellReadRequest(
            sandbox=ref, shell_id=shell_id, cursor=cursor, max_chars=max_chars, wait_ms=wait_ms
        )
        return wire.shell_read(await self._unary(self._stub.ShellRead, request))

    async def shell_write(self, ref: str, shell_id: str, data: bytes) -> m.Shell:
        request = pb.ShellWriteRequest(sandbox=ref, shell_id=shell_id, input=data)
        return wire.shell(await self._unary(self._stub.ShellWrite, request))

    async def shell_signal(self, ref: str, shell_id: str, signal: str) -> m.Shell:
        request = pb.ShellSignalRequest(sandbox=ref, shell_id=shell_id, signal=signal)
        return wire.shell(await self._unary(self._stub.ShellSignal, request))

    async def shell_close(self, ref: str, shell_id: str) -> m.Shell:
        request = pb.ShellRef(sandbox=ref, shell_id=shell_id)
        return wire.shell(await self._unary(self._stub.ShellClose, request))

    async def shells(self, ref: str) -> list[m.Shell]:
        reply = await self._unary(self._stub.ShellList, pb.SandboxRef(ref=ref), QUICK_TIMEOUT)
        return [wire.shell(s) for s in reply.shells]

    # services

    async def service_start(
        self,
        ref: str,
        name: str,
        argv: Sequence[str],
        cwd: str = "",
        env: Mapping[str, str] | None = None,
        probe: Probe | None = None,
        ready_timeout_s: float = 0,
        ready_interval_ms: int = 0,
        restart: str = "",
        publish: Sequence[tuple[int, int]] = (),
        secret_env: Sequence[str] = (),
    ) -> m.Service:
        """Start a supervised service; returns once its probe passes (or it started).

        publish: (guest port, host port) pairs, host port 0 for a free one. secret_env: the
        secrets it gets as variables (NAME or NAME=VARIABLE), at every (re)start.
        """
        request = pb.ServiceStartRequest(
            sandbox=ref,
            name=name,
            argv=list(argv),
            cwd=cwd,
            env=dict(env or {}),
            ready=pb.ReadyProbe(kind=probe.kind, target=probe.target) if probe else None,
            ready_timeout_s=ready_timeout_s,
            ready_interval_ms=ready_interval_ms,
            restart=restart,
            publish=[pb.PortPublish(guest_port=g, host_port=h) for g, h in publish],
            secret_env=list(secret_env),
        )
        return wire.service(await self._unary(self._stub.ServiceStart, request))

    async def service_stop(self, ref: str, name: str) -> m.Service:
        request = pb.ServiceRef(sandbox=ref, name=name)
        return wire.service(await self._unary(self._stub.ServiceStop, request))

    async def service_status(self, ref: str, name: str) -> m.Service:
        request = pb.ServiceRef(sandbox=ref, name=name)
        return wire.service(await self._unary(self._stub.ServiceStatus, request, QUICK_TIMEOUT))

    async def services(self, ref: str) -> list[m.Service]:
        reply = await self._unary(self._stub.ServiceList, pb.SandboxRef(ref=ref), QUICK_TIMEOUT)
        return [wire.service(s) for s in reply.services]

    async def service_logs(
        self,
        ref: str,
        name: str,
        tail: int = 0,
        all: bool = False,
        follow: bool = False,
        since: float = 0,
    ) -> AsyncIterator[list[m.LogLine]]:
        """Batches of log lines: the last `tail` (or all), then (follow) new ones as they come."""
        request = pb.ServiceLogsRequest(
            sandbox=ref, name=name, tail=tail, all=all, follow=follow, since=since
        )
        async for batch in self._stream(self._stub.ServiceLogs, request):
            yield wire.log_batch(batch)
