"""Agent refusals to start a process, as the user-facing errors every verb shares."""

from __future__ import annotations

from engine.agent.client import AgentError
from engine.errors import GroveError


def spawn_error(
    exc: AgentError,
    what: str,
    cwd: str | None,
    fallback: GroveError,
    not_found_remedy: str = "check the name or install it in the environment",
) -> GroveError:
    """what: e.g. "command 'ls'"; fallback is used for any other refusal."""
    if exc.code == "not_found":
        return GroveError("command_not_found", f"{what} not found in the sandbox", not_found_remedy)
    if exc.code == "bad_cwd":
        return GroveError(
            "bad_cwd",
            f"working directory '{cwd}' does not exist in the sandbox",
            "pass an existing --cwd",
        )
    return fallback
