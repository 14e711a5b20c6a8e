"""Grove's Python SDK: a typed client of the engine, blocking (`Grove`) or asyncio
(`AsyncGrove`), returning the frozen dataclasses of `engine.client.models` and raising
`GroveError(code, message, remedy)`.

    from engine.client import Grove

    with Grove.connect() as grove:
        box = grove.create("debian:12")
        print(grove.exec(box.id, ["uname", "-a"]).stdout.decode())
"""

from engine.api.aio_client import AsyncGrove, ExecStream, Probe, ShellStream
from engine.api.sync_client import Grove, SyncExecStream, SyncShellStream
from engine.api.version import API_VERSION
from engine.client.local import engine_unreachable, socket_alive, start_engine
from engine.client.models import (
    Diff,
    EngineInfo,
    Environment,
    Event,
    ExecExit,
    ExecOutput,
    ExecResult,
    FileChange,
    ForkResult,
    HostMeter,
    InventoryUpdate,
    Limits,
    LineageNode,
    LogLine,
    MeterHistory,
    MeterSample,
    NetworkInfo,
    PruneResult,
    PublishedPort,
    PullProgress,
    Sandbox,
    SandboxMeter,
    Service,
    Shell,
    ShellExit,
    ShellRead,
    Snapshot,
)
from engine.errors import GroveError

__all__ = [
    "API_VERSION",
    "AsyncGrove",
    "Diff",
    "EngineInfo",
    "Environment",
    "Event",
    "ExecExit",
    "ExecOutput",
    "ExecResult",
    "ExecStream",
    "FileChange",
    "ForkResult",
    "Grove",
    "GroveError",
    "HostMeter",
    "InventoryUpdate",
    "Limits",
    "LineageNode",
    "LogLine",
    "MeterHistory",
    "MeterSample",
    "NetworkInfo",
    "Probe",
    "PruneResult",
    "PublishedPort",
    "PullProgress",
    "Sandbox",
    "SandboxMeter",
    "Service",
    "Shell",
    "ShellExit",
    "ShellRead",
    "ShellStream",
    "Snapshot",
    "SyncExecStream",
    "SyncShellStream",
    "engine_unreachable",
    "socket_alive",
    "start_engine",
]
