"""`grove mcp serve` against the CLI, in the same run: the wall time of `echo hi` through a
persistent MCP stdio session (sandbox_exec) vs `grove sandbox exec ID -- echo hi` as a new
process each time (target: MCP <= 1.3x the CLI), and the MCP server's first-call latency
(spawn to initialized, and the first sandbox_exec, which connects to the engine). The SDK's
own exec (no MCP, no new process) is the floor both sit on.

    python -m bench --only mcp
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from bench.harness import REPO, Series
from engine.client import Grove

ENV = "debian:12"


def _grove_command() -> list[str]:
    """The installed entry point, as a user (or an MCP client's config) runs it."""
    entry = REPO / ".venv" / "bin" / "grove"
    return [str(entry)] if entry.exists() else [sys.executable, "-m", "engine.cli.main"]


def _sdk_series(client: Grove, sandbox: str, rounds: int) -> Series:
    series = Series("sdk: exec echo hi (Grove client, in process)")
    for _ in range(rounds):
        started = time.perf_counter()
        assert client.exec(sandbox, ["echo", "hi"]).stdout == b"hi\n"
        series.add((time.perf_counter() - started) * 1000)
    return series


def _cli_series(sandbox: str, rounds: int) -> Series:
    series = Series("cli: grove sandbox exec -- echo hi (process)")
    argv = [*_grove_command(), "sandbox", "exec", sandbox, "--", "echo", "hi"]
    for _ in range(rounds):
        started = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, env=os.environ.copy())
        series.add((time.perf_counter() - started) * 1000)
        assert proc.returncode == 0 and proc.stdout == "hi\n", proc.stderr
    return series


async def _mcp_series(sandbox: str, rounds: int) -> tuple[Series, Series, Series]:
    command = _grove_command()
    server = StdioServerParameters(
        command=command[0], args=[*command[1:], "mcp", "serve"], env=os.environ.copy(),
        cwd=str(REPO),
    )  # fmt: skip
    startup = Series("mcp: spawn to initialized")
    first = Series("mcp: first sandbox_exec (connects the engine)")
    steady = Series("mcp: sandbox_exec echo hi (persistent session)")
    args = {"sandbox": sandbox, "argv": ["echo", "hi"]}

    async def call(session: ClientSession) -> None:
        result = await session.call_tool("sandbox_exec", args)
        assert not result.isError and result.structuredContent is not None, result.content
        assert result.structuredContent["stdout"] == "hi\n"

    started = time.perf_counter()
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        startup.add((time.perf_counter() - started) * 1000)
        began = time.perf_counter()
        await call(session)
        first.add((time.perf_counter() - began) * 1000)
        for _ in range(rounds):
            began = time.perf_counter()
            await call(session)
            steady.add((time.perf_counter() - began) * 1000)
    return startup, first, steady


def run(client: Grove, rounds: int) -> list[dict[str, Any]]:
    sandbox = client.create(ENV).id
    n = max(5, rounds * 3)
    try:
        client.exec(sandbox, ["true"])  # warm: a restore's first command translates code
        sdk = _sdk_series(client, sandbox, n)
        cli = _cli_series(sandbox, n)
        startup, first, steady = asyncio.run(_mcp_series(sandbox, n))
    finally:
        client.terminate(sandbox)
    results = [s.summary() for s in (sdk, cli, startup, first, steady)]
    a, b = steady.summary()["p50_ms"], cli.summary()["p50_ms"]
    value = round(a / b, 3) if a and b else None
    results.append({
        "name": "exec echo hi: mcp / cli (<=)", "ratio": value, "target_ms": 1.3,
        "meets_target": None if value is None else value <= 1.3,
    })  # fmt: skip
    return results
