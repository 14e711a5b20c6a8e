"""Malformed API requests get INVALID_ARGUMENT with a one-line cause, never UNKNOWN.

One engine on an empty home (no images, so nothing here boots a VM) gets, for every RPC of the
Engine service, bytes that do not parse as its request, bytes that happen to parse, and
well-formed requests with bad values, over a raw channel that sends bytes as they are. Every
error must carry the JSON details {code, message, remedy} with a one-line message, and the
engine must still answer Status afterwards.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError, Message

from engine.api import grove_pb2 as pb
from engine.api import grove_pb2_grpc as pb_grpc
from engine.api.server import RequestGuard

REPO = Path(__file__).resolve().parent.parent
SERVICE = pb.DESCRIPTOR.services_by_name["Engine"]
METHODS: list[MethodDescriptor] = list(SERVICE.methods)
SEED = 1729
RANDOM_PER_METHOD = 8
BAD_VALUES_PER_METHOD = 12
TIMEOUT = 10.0

Code = grpc.StatusCode
#: What a request that parses may get: it names nothing that exists, or asks something fine.
WELL_FORMED = {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.FAILED_PRECONDITION}

#: Bytes that are not a protobuf message of any type: truncated tag, a length past the end,
#: a group never closed, field number 0, a varint of 11 bytes, wire type 7.
WIRE_ERRORS = [b"\xff", b"\x80", b"\x0a\xff\x01", b"\x0b", b"\x00", b"\x80" * 11, b"\x07"]

BAD_STRINGS = [
    "\x00",
    "nul\x00inside",
    "line\nbreak",
    "tab\there",
    "\u2028",
    "x" * 70_000,
    "é" * 300,
    "../../../etc/passwd",
    "-1",
    "%s%n{0}",
    " ",
]
BAD_INTS = {
    FieldDescriptor.TYPE_INT32: [-1, -(2**31), 2**31 - 1],
    FieldDescriptor.TYPE_INT64: [-1, -(2**63), 2**63 - 1],
}
BAD_FLOATS = [-1.0, math.nan, math.inf, -math.inf, 1e308]


# --- calls over a raw channel ----------------------------------------------------------------


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str | None


def path(method: MethodDescriptor) -> str:
    return f"/{SERVICE.full_name}/{method.name}"


def call(channel: grpc.Channel, method: MethodDescriptor, payloads: list[bytes]) -> Outcome:
    """Send payloads as they are (the first only, unless the RPC takes a stream)."""
    try:
        if method.client_streaming:
            requests = iter(payloads)
            if method.server_streaming:
                return _first(channel.stream_stream(path(method))(requests, timeout=TIMEOUT))
            channel.stream_unary(path(method))(requests, timeout=TIMEOUT)
        elif method.server_streaming:
            return _first(channel.unary_stream(path(method))(payloads[0], timeout=TIMEOUT))
        else:
            channel.unary_unary(path(method))(payloads[0], timeout=TIMEOUT)
    except grpc.RpcError as exc:
        return Outcome(exc.code(), exc.details())
    return Outcome(grpc.StatusCode.OK, None)


def _first(responses: Any) -> Outcome:
    # A stream that answers at all accepted the request: take one message and hang up.
    try:
        for _ in responses:
            break
    except grpc.RpcError as exc:
        return Outcome(exc.code(), exc.details())
    responses.cancel()
    return Outcome(grpc.StatusCode.OK, None)


def error_details(outcome: Outcome) -> dict[str, str]:
    """The JSON details of an error status, checked: code, message on one line, remedy."""
    assert outcome.details, f"{outcome.code} without details"
    data = json.loads(outcome.details)
    assert isinstance(data, dict) and {"code", "message", "remedy"} <= set(data), data
    message, remedy = str(data["message"]), str(data["remedy"])
    assert message and remedy, data
    for text in (message, remedy):
        assert len(text.splitlines()) == 1, f"not one line: {text!r}"
        assert not any(ord(c) < 32 or c in "\x7f\u2028\u2029" for c in text), repr(text)
        assert len(text) <= 500, f"{len(text)} characters"
    if outcome.code == grpc.StatusCode.INVALID_ARGUMENT:
        assert data["code"] == "invalid_argument", data
    if outcome.code == grpc.StatusCode.NOT_FOUND:
        assert str(data["code"]).endswith("_not_found"), data
    return data


# --- the corpus ------------------------------------------------------------------------------


def request_class(descriptor: Descriptor) -> type[Message]:
    cls: type[Message] = getattr(pb, descriptor.name)
    return cls


def decodes(method: MethodDescriptor, raw: bytes) -> bool:
    try:
        request_class(method.input_type).FromString(raw)
    except DecodeError:
        return False
    return True


def plausible(descriptor: Descriptor) -> Message:
    """A request that names things that do not exist, so that checks past the first run."""
    message = request_class(descriptor)()
    for field in descriptor.fields:
        oneof = field.containing_oneof
        if oneof is not None and field.name != oneof.fields[0].name:
            continue  # a oneof: its first member only (start, open)
        _fill(message, field)
    return message


def _fill(message: Message, field: FieldDescriptor) -> None:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        getattr(message, field.name)["NOSUCH"] = "nosuch"
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        sub = plausible(field.message_type)
        if field.is_repeated:
            getattr(message, field.name).append(sub)
        else:
            getattr(message, field.name).CopyFrom(sub)
    elif field.type == FieldDescriptor.TYPE_STRING:
        value = "nosuch:1" if field.name in ("environment", "name") else "nosuch"
        if field.is_repeated:
            getattr(message, field.name).append(value)
        else:
            setattr(message, field.name, value)


def _bad_values(field: FieldDescriptor) -> list[Any]:
    if field.type == FieldDescriptor.TYPE_STRING:
        return BAD_STRINGS
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return BAD_FLOATS
    return BAD_INTS.get(field.type, [])


def variants(descriptor: Descriptor, prefix: str = "") -> Iterator[tuple[str, Any, Message]]:
    """(field path, bad value, a plausible request with that one field set to it)."""
    for field in descriptor.fields:
        label = prefix + field.name
        if (
            field.type == FieldDescriptor.TYPE_MESSAGE
            and not field.message_type.GetOptions().map_entry
        ):
            for sub_label, value, sub in variants(field.message_type, f"{label}."):
                message = plausible(descriptor)
                target = getattr(message, field.name)
                if field.is_repeated:
                    del target[:]
                    target.append(sub)
                else:
                    target.CopyFrom(sub)
                yield sub_label, value, message
            continue
        for value in _bad_values(field):
            message = plausible(descriptor)
            if field.message_type is not None:  # a map<string, string>
                target = getattr(message, field.name)
                target.clear()
                target[value] = "v"
            elif field.is_repeated:
                target = getattr(message, field.name)
                del target[:]
                target.append(value)
            else:
                setattr(message, field.name, value)
            yield label, value, message


def garbage(rng: random.Random, method: MethodDescriptor) -> list[bytes]:
    descriptor = method.input_type
    payloads = list(WIRE_ERRORS)
    for field in descriptor.fields:
        tag = field.number << 3 | 2
        if field.type == FieldDescriptor.TYPE_STRING:
            payloads.append(bytes([tag, 2, 0xC3, 0x28]))  # not UTF-8
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            payloads.append(bytes([tag, 3, 0x0A, 0x05, 0x41]))  # a nested string cut short
    valid = plausible(descriptor).SerializeToString()
    if len(valid) > 1:
        payloads.append(valid[:-1])
    payloads += [rng.randbytes(rng.randint(1, 48)) for _ in range(RANDOM_PER_METHOD)]
    return payloads


def must_reject(value: Any) -> bool:
    """A value no field of any request may hold."""
    if isinstance(value, str):
        return "\x00" in value
    return isinstance(value, float) and not math.isfinite(value)


@dataclass
class Case:
    method: MethodDescriptor
    payloads: list[bytes]
    kind: str  # undecodable | decodable | bad_value
    label: str = ""
    strict: bool = False  # must be INVALID_ARGUMENT


def corpus(seed: int = SEED) -> list[Case]:
    rng = random.Random(seed)
    cases: list[Case] = []
    for method in METHODS:
        for raw in garbage(rng, method):
            if decodes(method, raw):
                if method.name == "Shutdown":
                    continue  # an Empty that parses would stop the engine
                cases.append(Case(method, [raw], "decodable"))
            else:
                cases.append(Case(method, [raw], "undecodable"))
        found = list(variants(method.input_type))
        for label, value, message in rng.sample(found, min(BAD_VALUES_PER_METHOD, len(found))):
            cases.append(
                Case(method, [message.SerializeToString()], "bad_value", label, must_reject(value))
            )
    return cases


# --- the engine ------------------------------------------------------------------------------


@dataclass
class Engine:
    home: Path
    process: subprocess.Popen[bytes]
    channel: grpc.Channel

    def status(self) -> pb.EngineStatus:
        stub = pb_grpc.EngineStub(self.channel)
        reply: pb.EngineStatus = stub.Status(pb.Empty(), timeout=TIMEOUT)
        return reply


def _serving(sock: Path, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if sock.exists():
            return
        if process.poll() is not None:
            break
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    pytest.fail(f"engine did not start (exit {process.poll()}): {tail}")


def _stop(home: Path, env: dict[str, str], process: subprocess.Popen[bytes]) -> None:
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(
            [sys.executable, "-m", "engine.cli.main", "engine", "stop"],
            cwd=REPO,
            env=env,
            capture_output=True,
            timeout=30,
        )
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.send_signal(signal.SIGKILL)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    # Short path: unix sockets must fit in sun_path. No images: nothing can boot.
    home = Path(tempfile.mkdtemp(prefix="gm", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROVE_")}
    env.update(GROVE_HOME=str(home), GROVE_MEM_DIR=str(home / "memory"), PYTHONPATH=str(REPO))
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.daemon", "--home", str(home)],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    channel = None
    try:
        _serving(home / "engine.sock", process, home / "engine.log")
        channel = grpc.insecure_channel(f"unix:{home / 'engine.sock'}")
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
        yield Engine(home, process, channel)
    finally:
        if channel is not None:
            channel.close()
        _stop(home, env, process)
        shutil.rmtree(home, ignore_errors=True)


# --- tests -----------------------------------------------------------------------------------

CORPUS = corpus()


def _failures(engine: Engine, cases: list[Case], check: Any) -> list[str]:
    failures = []
    for case in cases:
        outcome = call(engine.channel, case.method, case.payloads)
        try:
            check(case, outcome)
        except AssertionError as exc:
            shown = case.payloads[0][:40]
            failures.append(f"{case.method.name} {case.label} {shown!r}: {outcome.code} {exc}")
    return failures


def test_corpus_covers_every_rpc() -> None:
    kinds = {(c.method.name, c.kind) for c in CORPUS}
    for method in METHODS:
        assert (method.name, "undecodable") in kinds, method.name
    assert len(CORPUS) < 1500


def test_undecodable_bytes_are_invalid_argument(engine: Engine) -> None:
    def check(case: Case, outcome: Outcome) -> None:
        assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT
        data = error_details(outcome)
        assert data["message"].startswith(f"malformed {case.method.name} request: "), data

    cases = [c for c in CORPUS if c.kind == "undecodable"]
    failures = _failures(engine, cases, check)
    assert not failures, f"{len(failures)}/{len(cases)}:\n" + "\n".join(failures[:20])
    assert engine.status().pid == engine.process.pid


def test_well_formed_requests_never_unknown(engine: Engine) -> None:
    def check(case: Case, outcome: Outcome) -> None:
        if case.strict:
            assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT
        assert outcome.code in WELL_FORMED
        if outcome.code != grpc.StatusCode.OK:
            error_details(outcome)

    cases = [c for c in CORPUS if c.kind != "undecodable"]
    failures = _failures(engine, cases, check)
    assert not failures, f"{len(failures)}/{len(cases)}:\n" + "\n".join(failures[:20])
    assert engine.status().pid == engine.process.pid


def _method(name: str) -> MethodDescriptor:
    return SERVICE.methods_by_name[name]


NAN, INF = math.nan, math.inf
INVALID_CASES: list[tuple[str, list[Message]]] = [
    ("GetSandbox", [pb.SandboxRef(ref="line\nbreak")]),
    ("GetSandbox", [pb.SandboxRef(ref="x" * 70_000)]),
    ("TerminateSandbox", [pb.SandboxRef(ref="sb-\x00")]),
    ("InspectEnvironment", [pb.EnvironmentRef(name="debian:12\x00")]),
    ("PullEnvironment", [pb.PullRequest(name="debian\n12")]),
    ("CreateSandbox", [pb.CreateSandboxRequest(environment="nosuch:1", vcpus=-1)]),
    ("CreateSandbox", [pb.CreateSandboxRequest(environment="nosuch:1", name="a\u2028b")]),
    ("CreateSandbox", [pb.CreateSandboxRequest(environment="nosuch:1", secrets={"K": "\x00"})]),
    ("ForkSandbox", [pb.ForkRequest(sandbox="nosuch", replicas=-1)]),
    # A network policy that does not parse is refused before anything is looked up.
    ("CreateSandbox", [pb.CreateSandboxRequest(environment="nosuch:1", network="bogus")]),
    ("ForkSandbox", [pb.ForkRequest(sandbox="nosuch", network="allow=")]),
    ("SandboxNetwork", [pb.NetworkRequest(sandbox="nosuch", policy="allow=no_such!")]),
    ("SandboxNetwork", [pb.NetworkRequest(sandbox="nosuch", policy="")]),
    ("SandboxNetwork", [pb.NetworkRequest(sandbox="nosuch", policy="egress\nallow=a")]),
    ("CreateSandbox", [pb.CreateSandboxRequest(environment="e:1", network="allow=" + "a," * 9999)]),
    ("SandboxEvents", [pb.EventsRequest(sandbox="nosuch", after=-1)]),
    # A TTL out of range is refused before anything is looked up or created.
    ("CreateSandbox", [pb.CreateSandboxRequest(environment="nosuch:1", ttl_s=-1)]),
    ("CreateSandbox", [pb.CreateSandboxRequest(environment="nosuch:1", ttl_s=1e12)]),
    ("ForkSandbox", [pb.ForkRequest(sandbox="nosuch", ttl_s=-5)]),
    ("SetTtl", [pb.TtlRequest(sandbox="nosuch", ttl_s=0)]),
    ("SetTtl", [pb.TtlRequest(sandbox="nosuch", ttl_s=-1)]),
    ("SetTtl", [pb.TtlRequest(sandbox="nosuch", ttl_s=NAN)]),
    ("SetTtl", [pb.TtlRequest(sandbox="", clear=True)]),
    ("WatchMetering", [pb.TopRequest(interval_s=NAN)]),
    ("WatchMetering", [pb.TopRequest(interval_s=-1)]),
    ("WatchMetering", [pb.TopRequest(interval_s=INF)]),
    ("DiffSandbox", [pb.DiffRequest(sandbox="nosuch", paths=["/etc\x00"])]),
    ("ShellOpen", [pb.ShellOpenRequest(sandbox="nosuch", rows=-1)]),
    ("ShellOpen", [pb.ShellOpenRequest(sandbox="nosuch", shell_id="sh-1", cols=1 << 20)]),
    ("ShellRead", [pb.ShellReadRequest(sandbox="nosuch", shell_id="sh-1", cursor=-1)]),
    ("ShellRead", [pb.ShellReadRequest(sandbox="nosuch", shell_id="sh-1", wait_ms=-1)]),
    ("ShellSignal", [pb.ShellSignalRequest(sandbox="nosuch", shell_id="sh-1", signal="BOGUS")]),
    ("ServiceLogs", [pb.ServiceLogsRequest(sandbox="nosuch", name="web", tail=-1)]),
    ("ServiceLogs", [pb.ServiceLogsRequest(sandbox="nosuch", name="web", since=INF)]),
    ("ServiceStart", [pb.ServiceStartRequest(sandbox="nosuch", name="w", ready_timeout_s=NAN)]),
    ("ServiceStart", [pb.ServiceStartRequest(sandbox="nosuch", name="w", argv=["a\x00"])]),
    # Streams whose first message is not the one that starts them, or that send none.
    ("Exec", []),
    ("Exec", [pb.ExecInput()]),
    ("Exec", [pb.ExecInput(stdin=b"data")]),
    ("Exec", [pb.ExecInput(stdin_eof=True)]),
    ("Exec", [pb.ExecInput(signal="INT")]),
    ("Exec", [pb.ExecInput(start=pb.ExecStart(sandbox="nosuch", argv=["true"], timeout_s=NAN))]),
    ("Exec", [pb.ExecInput(start=pb.ExecStart(sandbox="nosuch", argv=[]))]),
    ("Shell", []),
    ("Shell", [pb.ShellInput()]),
    ("Shell", [pb.ShellInput(stdin=b"ls\n")]),
    ("Shell", [pb.ShellInput(resize=pb.ShellResize(rows=24, cols=80))]),
    ("Shell", [pb.ShellInput(signal="INT")]),
    ("Shell", [pb.ShellInput(detach=True)]),
    ("Shell", [pb.ShellInput(open=pb.ShellOpenRequest(sandbox="nosuch", rows=-5))]),
    ("Shell", [pb.ShellInput(open=pb.ShellOpenRequest(sandbox="no\nsuch"))]),
]


@pytest.mark.parametrize(("name", "messages"), INVALID_CASES, ids=[c[0] for c in INVALID_CASES])
def test_bad_values_are_invalid_argument(
    engine: Engine, name: str, messages: list[Message]
) -> None:
    outcome = call(engine.channel, _method(name), [m.SerializeToString() for m in messages])
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome
    error_details(outcome)


MISSING_CASES: list[tuple[str, Message]] = [
    ("GetSandbox", pb.SandboxRef(ref="sb-00000000")),
    ("StopSandbox", pb.SandboxRef(ref="nosuch")),
    ("InspectEnvironment", pb.EnvironmentRef(name="nosuch:1")),
    ("DeleteSnapshot", pb.SnapshotRef(name="nosuch")),
    ("ResetSandbox", pb.ResetRequest(sandbox="nosuch")),
    ("MeteringHistory", pb.SandboxRef(ref="nosuch")),
    ("SandboxNetwork", pb.NetworkRequest(sandbox="nosuch")),
    ("SandboxNetwork", pb.NetworkRequest(sandbox="nosuch", policy="egress")),
    ("ServiceStatus", pb.ServiceRef(sandbox="nosuch", name="web")),
]


@pytest.mark.parametrize(("name", "message"), MISSING_CASES, ids=[c[0] for c in MISSING_CASES])
def test_missing_things_are_not_found(engine: Engine, name: str, message: Message) -> None:
    outcome = call(engine.channel, _method(name), [message.SerializeToString()])
    assert outcome.code == grpc.StatusCode.NOT_FOUND, outcome
    assert "\n" not in error_details(outcome)["message"]


def test_engine_still_serves(engine: Engine) -> None:
    status = engine.status()
    assert status.pid == engine.process.pid and status.home == str(engine.home)
    assert engine.process.poll() is None


# --- the guard on its own: a bad message in the middle of a stream ---------------------------


class _Servicer(pb_grpc.EngineServicer):
    """Exec reads the whole stream, as the real one does in the background; Shell swallows
    what the stream raises."""

    async def Exec(self, requests: Any, context: Any) -> Any:
        count = 0
        async for _ in requests:
            count += 1
        yield pb.ExecOutput(started_pid=count)

    async def Shell(self, requests: Any, context: Any) -> Any:
        try:
            async for _ in requests:
                pass
        except Exception:
            pass
        yield pb.ShellOutput(output=b"done")


async def test_guard_rejects_a_bad_message_mid_stream(tmp_path: Path) -> None:
    server = grpc.aio.server(interceptors=[RequestGuard()])
    pb_grpc.add_EngineServicer_to_server(_Servicer(), server)
    sock = Path(tempfile.mkdtemp(prefix="gg", dir="/tmp")) / "s"
    server.add_insecure_port(f"unix:{sock}")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"unix:{sock}") as channel:
            good = pb.ExecInput(stdin=b"x").SerializeToString()
            nul = pb.ShellInput(signal="\x00").SerializeToString()
            for name, bad in (("Exec", b"\x0b"), ("Shell", nul)):
                rpc = channel.stream_stream(f"/{SERVICE.full_name}/{name}")(iter([good, bad, good]))
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    async for _ in rpc:
                        pass
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
                outcome = Outcome(caught.value.code(), caught.value.details())
                assert error_details(outcome)["code"] == "invalid_argument"
            rpc = channel.stream_stream(f"/{SERVICE.full_name}/Exec")(iter([good, good]))
            replies = [pb.ExecOutput.FromString(r) async for r in rpc]
            assert [r.started_pid for r in replies] == [2]
    finally:
        await server.stop(None)
        shutil.rmtree(sock.parent, ignore_errors=True)
