"""The typed client (SDK) without VMs: every RPC is reachable, every message converts, the
generated stubs are current, and an engine of another API version is one clear error."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from engine.api import grove_pb2 as pb
from engine.api import grove_pb2_grpc as pb_grpc
from engine.api import wire
from engine.api.aio_client import RPC_METHODS, AsyncGrove, grove_error
from engine.api.sync_client import Grove
from engine.api.version import API_VERSION
from engine.client import models as m
from engine.errors import GroveError

ROOT = Path(__file__).resolve().parent.parent


def test_every_rpc_of_the_proto_has_a_client_method() -> None:
    served = {method.name for method in pb.DESCRIPTOR.services_by_name["Engine"].methods}
    assert served == set(RPC_METHODS), "a new RPC needs a client method in RPC_METHODS"
    for rpc, name in RPC_METHODS.items():
        assert callable(getattr(AsyncGrove, name, None)), f"AsyncGrove lacks {name} for {rpc}"
        assert callable(getattr(Grove, name, None)), f"Grove lacks {name} for {rpc}"


def test_generated_modules_and_stubs_are_current() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "engine.api.codegen", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_sandbox_converts_and_empty_fields_are_none() -> None:
    full = wire.sandbox(pb.Sandbox(
        id="sb-1", name="web", environment="debian:12", phase="running", vcpus=2, mem_mib=256,
        pid=42, created_at=1.5, updated_at=2.5, parent_id="sb-0", template_id="tpl",
        error="", has_secrets=True, create_ms=12.5, expires_at=1800.5,
    ))  # fmt: skip
    assert full == m.Sandbox(
        id="sb-1", name="web", environment="debian:12", phase="running", vcpus=2, mem_mib=256,
        pid=42, parent_id="sb-0", created_at=1.5, updated_at=2.5, template_id="tpl",
        error=None, has_secrets=True, create_ms=12.5, expires_at=1800.5,
    )  # fmt: skip
    bare = wire.sandbox(pb.Sandbox(id="sb-2", phase="stopped"))
    assert (bare.pid, bare.parent_id, bare.error, bare.create_ms) == (None, None, None, None)
    assert bare.expires_at is None and bare.to_json()["expires_at"] is None  # 0 on the wire: never
    assert bare.label == "sb-2"
    with pytest.raises(dataclasses.FrozenInstanceError):
        bare.phase = "running"  # type: ignore[misc]


def test_metering_keeps_no_datum_apart_from_zero() -> None:
    sample = pb.SandboxMetering(id="sb-1", name="a", phase="running", unique_mem_bytes=0,
                                cpu_percent=3.5)  # fmt: skip
    reply = pb.TopReply(sampled_at=10.0, interval_s=1.0, sandboxes=[sample],
                        host=pb.HostMetering(sandboxes_running=1, naive_mem_bytes=100))  # fmt: skip
    top = wire.meter_sample(reply)
    meter = top.sandboxes[0]
    assert meter.unique_mem_bytes == 0  # a real zero stays a zero
    assert meter.shared_mem_bytes is None  # unset: no datum
    assert meter.cpu_percent == 3.5
    assert top.host.naive_mem_bytes == 100 and top.host.cow_aware_mem_bytes is None
    history = wire.meter_history(pb.HistoryReply(sandbox_id="sb-1", interval_s=1.0,
                                                 samples=[sample]))  # fmt: skip
    assert history.samples == (meter,)
    # The JSON view has every field, None as null.
    data = json.loads(json.dumps(top.to_json()))
    assert data["host"]["cow_aware_mem_bytes"] is None
    assert data["sandboxes"][0]["unique_mem_bytes"] == 0


def test_every_message_kind_converts() -> None:
    env = wire.environment(pb.Environment(name="debian:12", cached=True, size_bytes=5,
                                          template_ready=True))  # fmt: skip
    assert env.size_bytes == 5 and env.recipe_hash is None and env.template_ready
    assert wire.environment(pb.Environment(name="x", size_bytes=5)).size_bytes is None
    progress = wire.pull_progress(pb.PullProgress(stage="boot", fraction=-1))
    assert progress.fraction is None and progress.environment is None
    done = wire.pull_progress(pb.PullProgress(stage="done", fraction=1, done=True,
                                              environment=pb.Environment(name="e")))  # fmt: skip
    assert done.environment is not None and done.environment.name == "e"
    assert wire.prune_result(pb.PruneReply(bytes_freed=3, removed=["a"])).removed == ("a",)
    fork = wire.fork_result(pb.ForkReply(source="sb-1", snapshot="snap-1", paused_ms=9.5,
                                         children=[pb.Sandbox(id="sb-2")]))  # fmt: skip
    assert fork.children[0].id == "sb-2" and fork.paused_ms == 9.5
    snap = wire.snapshot(pb.Snapshot(name="s", id="snap-1", dependents=["sb-2"]))
    assert snap.dependents == ("sb-2",) and snap.source is None
    leaf = pb.LineageNode(id="sb-1", kind="sandbox", name="a", phase="running")
    tree = wire.lineage_node(
        pb.LineageNode(id="env:debian:12", kind="environment", name="d", children=[leaf])
    )
    assert [n.id for n in tree.walk()] == ["env:debian:12", "sb-1"] and tree.phase is None
    diff = wire.diff(
        pb.DiffReply(
            sandbox="sb-1",
            against="parent",
            changes=[
                pb.FileChange(path="/a", change="added", kind="file", new_sha256="ab", new_size=3)
            ],
        )
    )
    assert diff.changes[0].old_size is None and diff.changes[0].new_size == 3
    shell = wire.shell(pb.ShellInfo(sandbox_id="sb-1", shell_id="sh-1", state="exited",
                                    exit_code=0, argv=["bash"]))  # fmt: skip
    assert shell.exit_code == 0 and shell.pid is None and not shell.running
    assert wire.shell(pb.ShellInfo(state="running")).exit_code is None
    assert wire.shell_exit(pb.ShellExit(signal="HUP", state="exited")).exit_code is None
    read = wire.shell_read(pb.ShellReadReply(output="hi", cursor=1, next_cursor=3))
    assert (read.output, read.next_cursor) == ("hi", 3)
    port = pb.PublishedPort(host="127.0.0.1", host_port=8080, guest_port=80)
    service = wire.service(
        pb.ServiceInfo(sandbox_id="sb-1", name="web", state="running", published_ports=[port])
    )
    assert service.published_ports[0].host_port == 8080 and service.exit_code is None
    assert service.active and service.restart == "no"
    lines = wire.log_batch(pb.ServiceLogBatch(lines=[pb.ServiceLogLine(ts=1, stream="stdout",
                                                                       text="x")]))  # fmt: skip
    assert lines == [m.LogLine(ts=1, stream="stdout", text="x")]
    event = wire.event(pb.SandboxEvent(seq=1, kind="created", detail_json='{"a": 1}'))
    assert event.detail == {"a": 1}
    assert wire.event(pb.SandboxEvent(detail_json="not json")).detail == {"raw": "not json"}
    assert wire.exec_output(pb.ExecOutput(started_pid=7)) == 7
    assert wire.exec_output(pb.ExecOutput(stderr=b"e")) == m.ExecOutput("stderr", b"e")
    ended = wire.exec_output(pb.ExecOutput(exit=pb.ExecExit(exit_code=-1, signal="KILL")))
    assert ended == m.ExecExit(exit_code=-1, signal="KILL")
    info = wire.engine_info(pb.EngineStatus(pid=1, api_version=API_VERSION))
    assert info.api_version == API_VERSION


def test_network_converts_and_no_datum_stays_none() -> None:
    shown = wire.network(pb.NetworkInfo(
        sandbox_id="sb-1", policy="allow=example.org:443", backend="namespace",
        guest_address="10.0.2.15", namespace="grove-sb-1", host_address="10.200.0.2",
        pinned=["example.org=93.184.216.34"], rx_bytes=0, tx_bytes=512,
    ))  # fmt: skip
    assert shown == m.NetworkInfo(
        sandbox_id="sb-1", policy="allow=example.org:443", backend="namespace",
        guest_address="10.0.2.15", namespace="grove-sb-1", host_address="10.200.0.2",
        pinned=("example.org=93.184.216.34",), rx_bytes=0, tx_bytes=512, applied_ms=None,
    )  # fmt: skip
    user = wire.network(pb.NetworkInfo(sandbox_id="sb-2", policy="egress", backend="user",
                                       applied_ms=3.5))  # fmt: skip
    assert (user.namespace, user.host_address, user.rx_bytes, user.tx_bytes) == (None,) * 4
    assert user.applied_ms == 3.5 and user.to_json()["pinned"] == []
    assert wire.sandbox(pb.Sandbox(id="sb-1", network="off")).network == "off"
    assert wire.sandbox(pb.Sandbox(id="sb-1")).network is None
    info = wire.engine_info(pb.EngineStatus(network_backend="user", network_default="egress"))
    assert (info.network_backend, info.network_default) == ("user", "egress")
    # Unset: show only; set (even to ""): change it.
    assert not pb.NetworkRequest(sandbox="sb-1", policy=None).HasField("policy")
    assert pb.NetworkRequest(sandbox="sb-1", policy="off").HasField("policy")
    meter = wire.sandbox_meter(pb.SandboxMetering(id="sb-1", net_rx_bytes=0))
    assert (meter.net_rx_bytes, meter.net_tx_bytes) == (0, None)


def test_bytes_in_json_are_text_or_base64() -> None:
    result = m.ExecResult(exit_code=0, stdout=b"ok\n", stderr=b"\xff\xfe")
    data = result.to_json()
    assert data["stdout"] == "ok\n" and data["stderr"] == {"base64": "//4="}


class _Status(pb_grpc.EngineServicer):
    """Serves only Status, as an engine of another API version would."""

    def __init__(self, api_version: int) -> None:
        self.api_version = api_version

    async def Status(self, request: pb.Empty, context: Any) -> pb.EngineStatus:
        return pb.EngineStatus(pid=1, socket="s", version="0.0.9", api_version=self.api_version)


async def _serve(socket_path: str, api_version: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    pb_grpc.add_EngineServicer_to_server(_Status(api_version), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"unix:{socket_path}")
    await server.start()
    return server


async def test_an_engine_of_another_api_version_is_one_clear_error() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/engine.sock"
        server = await _serve(path, API_VERSION + 1)
        try:
            client = AsyncGrove(path)
            with pytest.raises(GroveError) as info:
                await client.handshake()
            assert info.value.code == "api_mismatch"
            assert f"API {API_VERSION + 1}" in info.value.message and info.value.remedy
            # Without the check (engine stop/status of an old engine) it still answers.
            assert (await client.handshake(check_version=False)).api_version == API_VERSION + 1
            # An RPC that engine does not serve: the engine's status, not a bare gRPC dump.
            with pytest.raises(GroveError) as info:
                await client.sandboxes()
            assert info.value.code == "api_mismatch" and "\n" not in info.value.message
            await client.close()
        finally:
            await server.stop(None)


def test_engine_errors_keep_their_code_message_and_remedy() -> None:
    async def failing() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/engine.sock"

            class NotFound(pb_grpc.EngineServicer):
                async def GetSandbox(self, request: pb.SandboxRef, context: Any) -> pb.Sandbox:
                    error = GroveError("sandbox_not_found", "no sandbox 'x'", "see 'grove ps'")
                    await context.abort(grpc.StatusCode.NOT_FOUND, error.to_json())
                    raise AssertionError("abort returns only by raising")

            server = grpc.aio.server()
            pb_grpc.add_EngineServicer_to_server(NotFound(), server)  # type: ignore[no-untyped-call]
            server.add_insecure_port(f"unix:{path}")
            await server.start()
            try:
                async with AsyncGrove(path) as client:
                    with pytest.raises(GroveError) as info:
                        await client.get("x")
                assert info.value.to_dict() == {
                    "code": "sandbox_not_found", "message": "no sandbox 'x'",
                    "remedy": "see 'grove ps'",
                }  # fmt: skip
            finally:
                await server.stop(None)

    asyncio.run(failing())


def test_unreachable_engine_error_names_the_socket() -> None:
    error = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "connect failed"
    )
    converted = grove_error(error)
    assert converted.code == "engine_unreachable" and converted.remedy
