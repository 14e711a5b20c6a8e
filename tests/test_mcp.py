"""grove mcp serve, driven by a real MCP client session over stdio against the test engine.

Every call goes through the mcp package's own client (stdio_client + ClientSession) to a
spawned `grove mcp serve`, as an agent's MCP host would do it. VMs: one sandbox and its two
forks (exec, files, progress, TTL, fork, trees), and one sandbox holding a secret.
"""

from __future__ import annotations

import inspect
import itertools
import json
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Grove
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult

from engine.client import AsyncGrove
from engine.mcp.profiles import tools_for

CORE = {
    "sandbox_create", "sandbox_list", "sandbox_terminate", "sandbox_fork", "sandbox_exec",
    "file_read", "file_write",
}  # fmt: skip


class Agent:
    """One MCP client session; keeps every result's text to check what was ever shown."""

    def __init__(self, session: ClientSession) -> None:
        self.session = session
        self.seen: list[str] = []

    async def raw(self, name: str, args: dict[str, Any], **kw: Any) -> CallToolResult:
        result = await self.session.call_tool(name, args, **kw)
        self.seen += [getattr(c, "text", "") for c in result.content]
        self.seen.append(json.dumps(result.structuredContent))
        return result

    async def call(self, name: str, args: dict[str, Any], **kw: Any) -> dict[str, Any]:
        result = await self.raw(name, args, **kw)
        text = " ".join(getattr(c, "text", "") for c in result.content)
        assert not result.isError, f"{name} failed: {text}"
        assert isinstance(result.structuredContent, dict), f"{name}: no structured result"
        # The text block is the same JSON, for clients that read only text.
        assert json.loads(result.content[0].text) == result.structuredContent  # type: ignore[union-attr]
        return result.structuredContent

    async def fail(self, name: str, args: dict[str, Any]) -> dict[str, str]:
        result = await self.raw(name, args)
        assert result.isError, f"{name} {args} succeeded: {result.structuredContent}"
        assert len(result.content) == 1
        text = result.content[0].text  # type: ignore[union-attr]
        assert "Traceback" not in text
        error: dict[str, str] = json.loads(text)
        assert set(error) == {"code", "message", "remedy"}, error
        assert error["code"] and error["message"] and error["remedy"], error
        return error


@asynccontextmanager
async def agent(grove: Grove | dict[str, str], profile: str = "core") -> AsyncIterator[Agent]:
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "engine.cli.main", "mcp", "serve", "--profile", profile],
        env=grove.env if isinstance(grove, Grove) else grove,
        cwd=str(REPO),
    )
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield Agent(session)


@pytest.fixture
def offline(tmp_path: Path) -> dict[str, str]:
    """A home with no engine: listing tools connects to none (the first tool call does)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROVE_")}
    return {**env, "GROVE_HOME": str(tmp_path), "PYTHONPATH": str(REPO),
            "XDG_CONFIG_HOME": str(tmp_path / "config")}  # fmt: skip


async def test_profiles_serve_different_tools_with_typed_schemas(offline: dict[str, str]) -> None:
    async with agent(offline, "core") as core:
        core_tools = (await core.session.list_tools()).tools
    async with agent(offline, "full") as full:
        full_tools = (await full.session.list_tools()).tools
    assert {t.name for t in core_tools} == CORE
    full_names = {t.name for t in full_tools}
    assert full_names > CORE
    assert full_names == {t.name for t in tools_for("full")}
    for wanted in ("snapshot_create", "sandbox_reset", "sandbox_diff", "tree_push", "tree_pull",
                   "service_start", "service_logs", "shell_open", "shell_read", "sandbox_top",
                   "sandbox_set_ttl", "sandbox_clear_ttl"):  # fmt: skip
        assert wanted in full_names
    for t in full_tools:
        assert t.description and t.outputSchema is not None, t.name
        assert t.annotations is not None and t.annotations.title, t.name
        props = t.inputSchema["properties"]
        undocumented = [k for k, v in props.items() if "description" not in v]
        assert not undocumented, f"{t.name}: {undocumented} have no description"
    create = next(t for t in core_tools if t.name == "sandbox_create")
    assert create.inputSchema["properties"]["secrets"]["anyOf"][0]["type"] == "object"
    fork = next(t for t in core_tools if t.name == "sandbox_fork")
    assert fork.inputSchema["properties"]["replicas"]["minimum"] == 1
    assert not (Path(offline["GROVE_HOME"]) / "engine.sock").exists()


def test_errors_never_quote_what_was_given() -> None:
    """Argument values may be secrets: no error text repeats one, whatever failed."""
    from mcp.server.fastmcp.exceptions import ToolError
    from pydantic import BaseModel, ValidationError

    from engine.errors import GroveError
    from engine.mcp import errors

    class Args(BaseModel):
        count: int

    try:
        Args(count="s3cret-value")  # type: ignore[arg-type]
    except ValidationError as exc:
        wrapped = ToolError(f"Error executing tool t: {exc}")
        wrapped.__cause__ = exc
        bad = errors.from_exception(wrapped, "t", "core")
    assert bad.code == "invalid_argument" and "count" in bad.message
    assert "s3cret" not in bad.to_json()
    crash = ToolError("Error executing tool t: s3cret-value")
    crash.__cause__ = RuntimeError("s3cret-value")
    internal = errors.from_exception(crash, "t", "core")
    assert internal.code == "internal_error" and "s3cret" not in internal.to_json()
    shown = errors.result(
        GroveError("x", "it said s3cret-value", "not s3cret-value"),
        errors.secret_values({"secrets": {"TOKEN": "s3cret-value"}}),
    )
    assert shown.isError and "s3cret" not in shown.content[0].text  # type: ignore[union-attr]
    assert errors.secret_values({"secrets": '{"TOKEN": "s3cret-value"}'}) == ["s3cret-value"]
    # Remedies name the tool's arguments where the engine's name CLI options.
    assert errors.for_tools("pass --allow-secrets if so; see --help") == (
        "pass allow_secrets=true if so; see --help"
    )


async def test_bad_input_is_a_tool_error_with_code_and_remedy(grove: Grove) -> None:
    async with agent(grove) as a:
        error = await a.fail("sandbox_exec", {"sandbox": "no-such-box", "argv": []})
        assert error["code"] == "invalid_argument"
        error = await a.fail("sandbox_exec", {"sandbox": "no-such-box", "command": "   "})
        assert error["code"] == "invalid_argument"
        error = await a.fail("sandbox_exec", {"argv": ["true"]})
        assert error["code"] == "invalid_argument" and "sandbox" in error["message"]
        error = await a.fail("sandbox_fork", {"sandbox": "no-such-box", "replicas": 0})
        assert error["code"] == "invalid_argument" and "replicas" in error["message"]
        error = await a.fail("sandbox_fork", {"sandbox": "no-such-box", "replicas": 100})
        assert error["code"] == "invalid_argument" and "100" in error["message"]
        error = await a.fail("sandbox_exec", {"sandbox": "no-such-box", "argv": ["true"]})
        assert error["code"] == "sandbox_not_found", error
        error = await a.fail("file_read", {"sandbox": "no-such-box", "path": "/etc/hostname"})
        assert error["code"] == "sandbox_not_found", error
        error = await a.fail("sandbox_terminate", {"sandbox": "no-such-box"})
        assert error["code"] == "sandbox_not_found", error
        error = await a.fail("snapshot_create", {"sandbox": "x", "name": "y"})
        assert error["code"] == "unknown_tool" and "--profile full" in error["remedy"]
        # The session goes on after errors.
        listed = await a.call("sandbox_list", {})
        assert isinstance(listed["sandboxes"], list)


async def test_create_exec_files_fork_terminate(grove: Grove) -> None:
    made: list[str] = []
    try:
        async with agent(grove, "full") as a:
            box = await a.call(
                "sandbox_create", {"environment": "debian:12", "name": "mcp-1", "ttl_s": 3600}
            )
            made.append(box["id"])
            assert box["phase"] == "running" and box["name"] == "mcp-1"
            assert time.time() + 3000 < box["expires_at"] <= time.time() + 3600
            shorter = await a.call("sandbox_set_ttl", {"sandbox": "mcp-1", "ttl_s": 1800})
            assert shorter["expires_at"] < box["expires_at"]
            cleared = await a.call("sandbox_clear_ttl", {"sandbox": "mcp-1"})
            assert cleared["expires_at"] is None

            hi = await a.call("sandbox_exec", {"sandbox": box["id"], "argv": ["echo", "hi"]})
            assert (hi["exit_code"], hi["stdout"], hi["truncated"]) == (0, "hi\n", False)
            shell = await a.call("sandbox_exec", {
                "sandbox": "mcp-1", "command": "cat; echo $X >&2; exit 3",
                "stdin": "from stdin", "env": {"X": "ex"}, "cwd": "/tmp",
            })  # fmt: skip
            assert (shell["exit_code"], shell["stdout"], shell["stderr"]) == (
                3,
                "from stdin",
                "ex\n",
            )

            written = await a.call("file_write", {
                "sandbox": box["id"], "path": "/root/notes/state.txt", "content": "parent state\n",
            })  # fmt: skip
            assert written["bytes"] == len("parent state\n")
            read = await a.call(
                "file_read", {"sandbox": box["id"], "path": "/root/notes/state.txt"}
            )
            assert (read["content"], read["encoding"], read["truncated"]) == (
                "parent state\n",
                "utf-8",
                False,
            )

            # A long command reports progress (output so far) while it runs.
            updates: list[tuple[float, float | None, str | None]] = []

            async def progress(done: float, total: float | None, message: str | None) -> None:
                updates.append((done, total, message))

            slow = await a.call(
                "sandbox_exec",
                {"sandbox": box["id"], "command": "for i in 1 2 3; do echo $i; sleep 1; done"},
                progress_callback=progress,
            )
            assert slow["stdout"] == "1\n2\n3\n"
            assert len(updates) >= 2, updates
            assert all(b[0] > a_[0] for a_, b in itertools.pairwise(updates))
            assert any("stdout" in (m or "") and "lines" in (m or "") for _, _, m in updates)

            fork = await a.call("sandbox_fork", {"sandbox": box["id"], "replicas": 2})
            children = [c["id"] for c in fork["children"]]
            made += children
            assert len(children) == 2 and fork["source"] == box["id"]
            for child in children:
                got = await a.call("file_read", {"sandbox": child, "path": "/root/notes/state.txt"})
                assert got["content"] == "parent state\n"

            # A small tree in and out again, binary content included.
            tree = {"a.txt": "A\n", "sub/b.txt": "B\n"}
            pushed = await a.call(
                "tree_push", {"sandbox": children[0], "dest": "/srv/t", "files": tree}
            )
            assert pushed["files"] == 2
            await a.call("tree_push", {
                "sandbox": children[0], "dest": "/srv/t", "files": {"bin": "AP8="},
                "encoding": "base64",
            })  # fmt: skip
            pulled = await a.call("tree_pull", {"sandbox": children[0], "path": "/srv/t"})
            got_tree = {f["path"]: (f["content"], f["encoding"]) for f in pulled["files"]}
            assert got_tree == {
                "a.txt": ("A\n", "utf-8"), "sub/b.txt": ("B\n", "utf-8"), "bin": ("AP8=", "base64"),
            }  # fmt: skip

            for sid in made:
                gone = await a.call("sandbox_terminate", {"sandbox": sid})
                assert gone["phase"] == "terminated"
            listed = await a.call("sandbox_list", {})
            assert not {s["id"] for s in listed["sandboxes"]} & set(made)
            made.clear()
    finally:
        for sid in made:
            grove.run("sandbox", "terminate", sid)


@pytest.mark.skipif(
    "secret_env" not in inspect.signature(AsyncGrove.exec).parameters,
    reason="the client has no per-call secret_env yet",
)
async def test_secret_values_never_appear_in_results(grove: Grove) -> None:
    value = "tok-" + secrets.token_hex(16)
    made: list[str] = []
    try:
        async with agent(grove) as a:
            box = await a.call("sandbox_create", {"secrets": {"TOKEN": value}})
            made.append(box["id"])
            assert box["secret_names"] == ["TOKEN"]
            shown = await a.call("sandbox_exec", {
                "sandbox": box["id"], "command": 'printf "%s" "$TOKEN"; printf "%s" "$TOKEN" >&2',
                "secret_env": ["TOKEN"],
            })  # fmt: skip
            assert shown["exit_code"] == 0
            assert shown["stdout"] and shown["stdout"] == shown["stderr"]  # it was set...
            unset = await a.call(
                "sandbox_exec", {"sandbox": box["id"], "command": 'echo "[$TOKEN]"'}
            )
            assert unset["stdout"] == "[]\n"  # ...only for the call that asked for it
            await a.raw("sandbox_create", {"secrets": {"TOKEN": value, "bad name": value}})
            await a.raw("sandbox_create", {"secrets": {"TOKEN": value}, "vcpus": 0})
            await a.call("sandbox_list", {})
            await a.call("sandbox_terminate", {"sandbox": box["id"]})
            made.clear()
            assert not [text for text in a.seen if value in text]
    finally:
        for sid in made:
            grove.run("sandbox", "terminate", sid)
