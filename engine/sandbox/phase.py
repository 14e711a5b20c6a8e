"""The sandbox lifecycle as an explicit state machine."""

from __future__ import annotations

from enum import StrEnum

from engine.errors import GroveError


class Phase(StrEnum):
    CREATING = "creating"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    RESETTING = "resetting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    TERMINATING = "terminating"
    TERMINATED = "terminated"


# The -ing phases record an operation's intent before it touches the VM, so an engine that
# dies halfway leaves a row that says what to finish: see SandboxRecovery.
_ALLOWED: dict[Phase, frozenset[Phase]] = {
    Phase.CREATING: frozenset({Phase.RUNNING, Phase.FAILED, Phase.TERMINATING}),
    Phase.STARTING: frozenset({Phase.RUNNING, Phase.FAILED, Phase.STOPPED, Phase.TERMINATING}),
    Phase.RUNNING: frozenset(
        {Phase.PAUSED, Phase.RESETTING, Phase.STOPPING, Phase.FAILED, Phase.TERMINATING}
    ),
    Phase.PAUSED: frozenset(
        {Phase.RUNNING, Phase.RESETTING, Phase.STOPPING, Phase.FAILED, Phase.TERMINATING}
    ),
    Phase.RESETTING: frozenset({Phase.RUNNING, Phase.FAILED, Phase.TERMINATING}),
    Phase.STOPPING: frozenset({Phase.STOPPED, Phase.FAILED, Phase.TERMINATING}),
    Phase.STOPPED: frozenset({Phase.STARTING, Phase.RESETTING, Phase.FAILED, Phase.TERMINATING}),
    Phase.FAILED: frozenset({Phase.TERMINATING}),
    Phase.TERMINATING: frozenset({Phase.TERMINATED}),
    Phase.TERMINATED: frozenset(),
}

#: Phases in which a QEMU process may be alive and belongs to the sandbox.
LIVE = frozenset(
    {
        Phase.CREATING,
        Phase.STARTING,
        Phase.RUNNING,
        Phase.PAUSED,
        Phase.RESETTING,
        Phase.STOPPING,
        Phase.TERMINATING,
    }
)


def check_transition(sandbox_id: str, current: Phase, target: Phase) -> None:
    if target not in _ALLOWED[current]:
        raise GroveError(
            "invalid_phase",
            f"sandbox {sandbox_id} is {current.value}; it cannot become {target.value}",
            _remedy(current),
        )


def _remedy(current: Phase) -> str:
    if current is Phase.TERMINATED:
        return "create a new sandbox with 'grove sandbox create ENV'"
    if current is Phase.STOPPED:
        return "start it first with 'grove sandbox start ID'"
    if current is Phase.FAILED:
        return "terminate it with 'grove sandbox terminate ID' and create a new one"
    return "check its phase with 'grove sandbox ls'"
