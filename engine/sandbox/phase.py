"""The sandbox lifecycle as an explicit state machine."""

from __future__ import annotations

from enum import StrEnum

from engine.errors import GroveError


class Phase(StrEnum):
    CREATING = "creating"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    FAILED = "failed"
    TERMINATED = "terminated"


_ALLOWED: dict[Phase, frozenset[Phase]] = {
    Phase.CREATING: frozenset({Phase.RUNNING, Phase.FAILED, Phase.TERMINATED}),
    Phase.RUNNING: frozenset({Phase.PAUSED, Phase.STOPPED, Phase.FAILED, Phase.TERMINATED}),
    Phase.PAUSED: frozenset({Phase.RUNNING, Phase.STOPPED, Phase.FAILED, Phase.TERMINATED}),
    Phase.STOPPED: frozenset({Phase.CREATING, Phase.RUNNING, Phase.FAILED, Phase.TERMINATED}),
    Phase.FAILED: frozenset({Phase.TERMINATED}),
    Phase.TERMINATED: frozenset(),
}

#: Phases in which a QEMU process is expected to be alive.
LIVE = frozenset({Phase.CREATING, Phase.RUNNING, Phase.PAUSED})


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
