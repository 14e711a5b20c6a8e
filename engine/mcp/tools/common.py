"""Argument types the tools share, with the descriptions clients show to agents."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from engine.errors import invalid

SandboxRef = Annotated[
    str, Field(min_length=1, max_length=256, description="the sandbox's id or name")
]
SecretEnv = Annotated[
    list[str] | None,
    Field(
        description="secrets of the sandbox this command gets as environment variables: "
        "NAME, or NAME=VARIABLE; their values are redacted from every output"
    ),
]
Env = Annotated[
    dict[str, str] | None, Field(description="environment variables to set, NAME -> value")
]
Cwd = Annotated[str | None, Field(description="working directory in the guest (absolute)")]
Network = Annotated[
    str | None,
    Field(
        description="network policy: off, published (the engine's usual default: only "
        "published ports), egress (outbound anywhere) or allow=HOST[:PORT],..."
    ),
]
TtlSeconds = Annotated[
    float | None,
    Field(
        ge=0,
        description="seconds it may live before the engine terminates it; 0: no limit; "
        "omitted: the engine's default",
    ),
]


def command_argv(argv: list[str] | None, command: str | None) -> list[str]:
    """Exactly one of argv (run as is) and command (a shell line, run by sh -c)."""
    if argv is not None and command is not None:
        raise invalid("both argv and command given", "pass argv or command, not both")
    if command is not None:
        if not command.strip():
            raise invalid("command is empty", "pass a shell command line, e.g. 'ls -la /root'")
        return ["sh", "-c", command]
    if not argv or not argv[0]:
        raise invalid(
            "no command given",
            'pass argv (e.g. ["uname", "-a"]) or command (a shell line, e.g. \'echo hi\')',
        )
    return list(argv)
