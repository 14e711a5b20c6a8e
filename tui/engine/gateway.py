"""The contract between the dashboard and an engine.

Every method is async and returns the plain dataclasses of `tui.models`, so the widgets never
see gRPC types. Failures are `GroveError(code, message, remedy)`. Features the engine has not
grown yet raise `not_supported(...)`; the dashboard shows those as 'not available yet'.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from engine.errors import GroveError
from tui.models import (
    EngineInfo,
    EnvironmentInfo,
    EventInfo,
    ExecResult,
    LineageNode,
    MeterSample,
    PullUpdate,
    SandboxInfo,
)

NOT_SUPPORTED = "not_supported"


def not_supported(feature: str) -> GroveError:
    return GroveError(
        NOT_SUPPORTED,
        f"{feature} is not available yet in this engine",
        "upgrade the engine; this dashboard will use it as soon as the engine offers it",
    )


@runtime_checkable
class ShellSession(Protocol):
    """An interactive PTY: a guest shell through the engine, or a local one in tests."""

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
    async def connect(self) -> None:
        """Reach the engine, starting it if this gateway may; raises GroveError when it can't."""
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

    def events(self, sandbox: str, follow: bool = True, after: int = 0) -> AsyncIterator[EventInfo]:
        """A sandbox's lifecycle events, oldest first; with follow, never ends on its own."""
        ...

    # Not in the engine yet: these raise not_supported() until it grows them.

    def metering_stream(self, interval_s: float = 1.0) -> AsyncIterator[MeterSample]: ...

    async def lineage(self) -> list[LineageNode]: ...

    async def fork(self, ref: str, count: int = 1) -> list[SandboxInfo]: ...

    async def snapshot(self, ref: str, name: str = "") -> LineageNode: ...

    async def open_shell(self, ref: str, cols: int, rows: int) -> ShellSession: ...

    def service_logs(self, ref: str, service: str, follow: bool = True) -> AsyncIterator[str]: ...


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
