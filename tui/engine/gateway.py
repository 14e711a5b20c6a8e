"""The contract between the dashboard and an engine.

Every method is async and returns the plain dataclasses of `tui.models`, so the widgets never
see gRPC types. Failures are `GroveError(code, message, remedy)`. A gateway without one of the
optional features below raises `not_supported(...)` (the fake can be made so); the dashboard
shows those as 'not available yet'. The gRPC gateway has them all: engine and dashboard ship
together, and the SDK's API version check on connect catches a mismatched engine.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol, runtime_checkable

from engine.errors import GroveError
from tui.models import (
    EngineInfo,
    EnvironmentInfo,
    ExecResult,
    InventoryChange,
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

NOT_SUPPORTED = "not_supported"

#: Hears a transfer's progress (on the event loop, possibly once per chunk).
OnProgress = Callable[[TransferProgress], None]


def not_supported(feature: str) -> GroveError:
    return GroveError(
        NOT_SUPPORTED,
        f"{feature} is not available yet in this engine",
        "upgrade the engine; this dashboard will use it as soon as the engine offers it",
    )


@runtime_checkable
class ShellSession(Protocol):
    """An interactive PTY: a guest shell through the engine, or a local one in tests."""

    @property
    def shell_id(self) -> str:
        """The engine's id for the shell (to re-attach to it later); '' for local PTYs."""
        ...

    def output(self) -> AsyncIterator[bytes]:
        """Bytes from the PTY until it closes."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def resize(self, cols: int, rows: int) -> None: ...

    async def close(self) -> None: ...

    @property
    def exit_code(self) -> int | None:
        """The shell's exit status once output() has ended; None while it runs or if unknown."""
        ...


@runtime_checkable
class EngineGateway(Protocol):
    async def connect(self, start: bool = True) -> None:
        """Reach the engine (starting it if `start` and this gateway may); GroveError if not."""
        ...

    async def close(self) -> None: ...

    @property
    def description(self) -> str:
        """Where this gateway points, for the header (a socket path, or 'demo data')."""
        ...

    async def status(self) -> EngineInfo: ...

    async def list_environments(self) -> list[EnvironmentInfo]: ...

    def pull_environment(self, name: str, warm: bool = True) -> AsyncIterator[PullUpdate]: ...

    async def list_sandboxes(self, include_terminated: bool = False) -> list[SandboxInfo]: ...

    async def create_sandbox(
        self, environment: str, name: str = "", vcpus: int = 0, mem_mib: int = 0
    ) -> SandboxInfo: ...

    async def stop_sandbox(self, ref: str) -> SandboxInfo: ...

    async def start_sandbox(self, ref: str) -> SandboxInfo: ...

    async def terminate_sandbox(self, ref: str) -> SandboxInfo: ...

    async def exec_capture(
        self, ref: str, argv: Sequence[str], timeout_s: float | None = None
    ) -> ExecResult: ...

    def watch(self, after: int = 0, replay: int = 0) -> AsyncIterator[InventoryChange]:
        """Every sandbox's lifecycle on one stream: the whole inventory first (with the events
        after `after`, or the newest `replay` ones), then what each burst of events changed."""
        ...

    # Optional features: a gateway without one raises not_supported().

    def metering_stream(self, interval_s: float = 1.0) -> AsyncIterator[MeterSample]: ...

    async def metering_history(self, ref: str) -> list[SandboxMeter]:
        """The engine's recent samples of one sandbox, oldest first, each with sampled_at."""
        ...

    async def lineage(self) -> list[LineageNode]: ...

    async def fork(self, ref: str, count: int = 1, name_prefix: str = "") -> list[SandboxInfo]: ...

    async def snapshot(self, ref: str, name: str) -> LineageNode: ...

    async def reset_sandbox(self, ref: str, snapshot: str = "") -> SandboxInfo:
        """Back to a named snapshot, or (snapshot '') to how the sandbox was created."""
        ...

    async def network(self, ref: str, policy: str | None = None) -> NetworkInfo:
        """The sandbox's network; with policy (engine.net.policy text), change it first
        (applied live when it runs)."""
        ...

    async def list_shells(self, ref: str) -> list[ShellInfo]: ...

    async def open_shell(self, ref: str, cols: int, rows: int, shell_id: str = "") -> ShellSession:
        """A new shell, or (shell_id) the existing one, whose scrollback is replayed first."""
        ...

    async def list_services(self, ref: str) -> list[ServiceInfo]: ...

    async def start_service(
        self, ref: str, name: str, argv: Sequence[str], probe: tuple[str, str] | None = None
    ) -> ServiceInfo:
        """Returns once the service is ready (its probe passed), or started if it has none."""
        ...

    async def stop_service(self, ref: str, name: str) -> ServiceInfo: ...

    def service_logs(
        self, ref: str, name: str, follow: bool = True, tail: int = 500
    ) -> AsyncIterator[list[LogLine]]:
        """Batches of log lines: the last `tail`, then (follow) new ones as they come."""
        ...

    async def push_files(
        self, ref: str, local: str, guest: str, progress: OnProgress | None = None
    ) -> TransferResult:
        """A local file or directory into the guest at `guest` (a directory merges there)."""
        ...

    async def pull_files(
        self, ref: str, guest: str, local: str, progress: OnProgress | None = None
    ) -> TransferResult:
        """A guest file or directory out to `local` (a file into an existing directory keeps
        its name; a tree needs a new or empty directory)."""
        ...


def throttled(
    progress: OnProgress, per_second: float = 10.0, clock: Callable[[], float] = time.monotonic
) -> OnProgress:
    """`progress`, told at most `per_second` times a second: a stage change and the last
    update ('done') always get through, the chunks in between are dropped."""
    interval = 1.0 / per_second
    last_at: float | None = None
    last_stage = ""

    def report(update: TransferProgress) -> None:
        nonlocal last_at, last_stage
        now = clock()
        if (
            update.stage != last_stage
            or update.stage == "done"
            or last_at is None
            or now - last_at >= interval
        ):
            last_at, last_stage = now, update.stage
            progress(update)

    return report


PROBE_KINDS = ("tcp", "http", "file", "command")


def parse_probe(text: str) -> tuple[str, str] | None:
    """A readiness probe as a person types it, into the engine's (kind, target).

    '' -> none; '8000' or ':8000' or 'HOST:PORT' -> tcp; 'http://...' -> http;
    'KIND:TARGET' for any of tcp, http, file, command.
    """
    text = text.strip()
    if not text:
        return None
    if text.startswith(("http://", "https://")):
        return ("http", text)
    kind, sep, target = text.partition(":")
    if sep and kind in PROBE_KINDS:
        if not target.strip():
            raise GroveError(
                "invalid_argument",
                f"the {kind} probe needs a target",
                f"write {kind}:TARGET, e.g. tcp:127.0.0.1:8000",
            )
        return parse_probe(target) if kind == "tcp" and target.isdigit() else (kind, target)
    if text.isdigit():
        return ("tcp", f"127.0.0.1:{text}")
    if text.startswith(":") and text[1:].isdigit():
        return ("tcp", f"127.0.0.1{text}")
    host, _, port = text.rpartition(":")
    if host and port.isdigit():
        return ("tcp", text)
    raise GroveError(
        "invalid_argument",
        f"cannot read the probe '{text}'",
        "write a port (8000), HOST:PORT, an http:// URL, file:PATH or command:CMD",
    )


def parse_command(text: str) -> list[str]:
    """A command line into argv, shell-style quoting; pipes need an explicit `sh -c '...'`."""
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise GroveError(
            "invalid_argument", f"cannot read the command: {exc}", "check the quotes"
        ) from None
    if not argv:
        raise GroveError(
            "invalid_argument",
            "no command given",
            "type the command to run, e.g. python3 -m http.server 8000",
        )
    return argv


def derive_lineage(
    environments: Sequence[EnvironmentInfo], sandboxes: Sequence[SandboxInfo]
) -> list[LineageNode]:
    """Lineage from what every engine has today: environments, then sandboxes by parent_id.

    A fork whose parent is gone (terminated and no longer listed) is an orphan: it sits at the
    root, so it is never silently attributed to an environment it was not created from.
    """
    nodes: list[LineageNode] = []
    env_ids = {f"env:{e.name}" for e in environments}
    for sandbox in sandboxes:
        env_id = f"env:{sandbox.environment}"
        if sandbox.environment and env_id not in env_ids:
            env_ids.add(env_id)
            environments = [*environments, EnvironmentInfo(sandbox.environment)]
    for env in environments:
        nodes.append(LineageNode(id=f"env:{env.name}", kind="environment", label=env.name))
    known = {s.id for s in sandboxes}
    for sandbox in sandboxes:
        if sandbox.parent_id:
            parent = sandbox.parent_id if sandbox.parent_id in known else ""
        elif sandbox.environment:
            parent = f"env:{sandbox.environment}"
        else:
            parent = ""
        nodes.append(
            LineageNode(
                id=sandbox.id,
                kind="sandbox",
                label=sandbox.label,
                parent_id=parent,
                phase=sandbox.phase,
                sandbox=sandbox,
            )
        )
    return nodes
