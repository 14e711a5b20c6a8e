"""Readiness checks, run against the guest through its agent.

file, tcp and http are answered by the agent itself (a syscall or a socket, no process
spawned); command runs ``sh -c CMD`` in the guest with the service's environment and working
directory, ready when it exits 0. Every check answers with the reason it is not ready yet, so a
start that times out can say why.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.agent.client import AgentClient, AgentError
from engine.services.spec import Probe

#: One network check never takes longer than this, so the probe interval stays meaningful.
NET_TIMEOUT_S = 2.0
COMMAND_TIMEOUT_S = 30.0


async def check(
    agent: AgentClient,
    probe: Probe,
    budget_s: float,
    env: Mapping[str, str] | None = None,
    cwd: str = "",
) -> str:
    """'' when ready, else one line saying why not."""
    budget_s = max(budget_s, 0.05)
    if probe.kind == "command":
        return await _command(agent, probe.target, min(budget_s, COMMAND_TIMEOUT_S), env, cwd)
    timeout_ms = max(int(min(budget_s, NET_TIMEOUT_S) * 1000), 10)
    message = {"op": "probe", "kind": probe.kind, "target": probe.target, "timeout_ms": timeout_ms}
    try:
        reply = await agent.request(message, timeout=timeout_ms / 1000 + 10)
    except AgentError as exc:
        if exc.code == "unknown_op":
            return "this sandbox's guest agent predates readiness probes; recreate the sandbox"
        return f"{probe.kind} probe failed: {exc.message}"
    return "" if reply.get("ready") else str(reply.get("error") or "not ready")


async def _command(
    agent: AgentClient, command: str, timeout_s: float, env: Mapping[str, str] | None, cwd: str
) -> str:
    try:
        result = await agent.run(
            ["sh", "-c", command], env=dict(env) if env else None, cwd=cwd or None,
            timeout_s=timeout_s,
        )  # fmt: skip
    except AgentError as exc:
        return f"command probe could not run: {exc.message}"
    if result.ok:
        return ""
    if result.timed_out:
        return f"command probe timed out after {timeout_s:g}s"
    said = (result.stderr or result.stdout).decode("utf-8", errors="replace").strip()
    last = said.splitlines()[-1][:200] if said else ""
    how = f"exit {result.exit_code}" if result.exit_code is not None else f"signal {result.signal}"
    return f"command probe: {how}" + (f": {last}" if last else "")
