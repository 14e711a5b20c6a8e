"""Sandbox ids and names, validated."""

from __future__ import annotations

import re
import secrets

from engine.errors import invalid

# The name is also the guest's hostname, so it follows hostname rules (RFC 1123 label).
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def new_sandbox_id() -> str:
    return "sb-" + secrets.token_hex(4)


def validate_name(name: str) -> str:
    if not _NAME.match(name):
        raise invalid(
            f"invalid sandbox name '{name}'",
            "use 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit",
        )
    return name
