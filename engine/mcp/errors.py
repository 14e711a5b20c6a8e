"""Failures as MCP tool errors: an isError result whose text is {code, message, remedy}.

Every exception a tool call raises ends here, so an agent never sees a traceback: a
GroveError keeps its code, bad arguments become invalid_argument (naming the argument and the
rule, never the value given: it may be a secret), anything else is internal_error.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import Iterable, Mapping
from typing import Any

import pydantic
from mcp.server.fastmcp.exceptions import ToolError
from mcp.types import CallToolResult, TextContent

from engine.errors import GroveError, invalid

log = logging.getLogger("grove.mcp")

REDACTED = "[REDACTED]"

#: CLI options the engine's remedies name, as the tool arguments that do the same.
ARGUMENTS = {
    "--allow-secrets": "allow_secrets=true",
    "--replicas": "replicas",
    "--secret-env": "secret_env",
    "--network": "network",
    "--timeout": "timeout_s",
    "--snapshot": "snapshot",
    "--from-snapshot": "from_snapshot",
}
_OPTION = re.compile(r"--[a-z][a-z-]*")


def for_tools(remedy: str) -> str:
    """An engine remedy in the agent's terms: tool arguments where it names CLI options."""
    return _OPTION.sub(lambda found: ARGUMENTS.get(found.group(0), found.group(0)), remedy)


def from_validation(exc: pydantic.ValidationError) -> GroveError:
    problems = []
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in err.get("loc", ())) or "arguments"
        problems.append(f"{where}: {err.get('msg', 'invalid')}")
    return invalid(
        "invalid arguments: " + "; ".join(problems),
        "pass the arguments as the tool's input schema describes",
    )


def from_exception(exc: BaseException, tool: str, profile: str) -> GroveError:
    # FastMCP wraps what a tool raised in a ToolError whose text repeats the argument values
    # (pydantic's messages do): its cause is what happened, its text is never shown.
    cause = exc.__cause__ if isinstance(exc, ToolError) and exc.__cause__ is not None else exc
    if isinstance(cause, GroveError):
        return cause
    if isinstance(cause, pydantic.ValidationError):
        return from_validation(cause)
    if isinstance(cause, ToolError) and str(cause).startswith("Unknown tool"):
        return GroveError(
            "unknown_tool",
            f"this server has no tool named '{tool}' (profile {profile})",
            "list the tools again"
            + ("; 'grove mcp serve --profile full' serves every tool" if profile != "full" else ""),
        )
    # The frames only: an exception's text may quote an argument, and arguments may be secret.
    frames = "".join(traceback.format_tb(cause.__traceback__))
    log.error("tool %s failed: %s\n%s", tool, type(cause).__name__, frames)
    return GroveError(
        "internal_error",
        f"{tool} failed inside the MCP server ({type(cause).__name__})",
        "see the server's stderr; report it if it repeats",
    )


def secret_values(arguments: Mapping[str, Any]) -> list[str]:
    """The secret values a call carries (sandbox_create's secrets), longest first."""
    given = arguments.get("secrets")
    if isinstance(given, str):  # clients may send an object as a JSON string
        try:
            given = json.loads(given)
        except ValueError:
            return [given] if given else []
    if not isinstance(given, Mapping):
        return []
    values = {str(v) for v in given.values() if v}
    return sorted(values, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    for value in secrets:
        text = text.replace(value, REDACTED)
    return text


def result(error: GroveError, secrets: Iterable[str] = ()) -> CallToolResult:
    values = list(secrets)
    fields = error.to_dict()
    fields["remedy"] = for_tools(fields["remedy"])
    shown = {k: scrub(v, values) for k, v in fields.items()}
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(shown))],
        structuredContent=None,
        isError=True,
    )
