"""What a secret may be called and hold, and how a call asks for one as a variable.

Errors name the secret, never its value (a message may end up in a log or a terminal)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from engine.errors import GroveError, invalid

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_VALUE = 64 * 1024
#: A sandbox holds at most this many (each is a file in its guest and in the vault).
MAX_SECRETS = 64


def validate_name(name: str) -> str:
    if not NAME.match(name):
        shown = name[:64] if NAME.match(name[:64] or "_") else "that name"
        raise invalid(
            f"invalid secret name '{shown}'",
            "a secret name is a letter or _ then up to 63 letters, digits or _",
        )
    return name


def validate_values(values: Mapping[str, str]) -> dict[str, str]:
    if len(values) > MAX_SECRETS:
        raise invalid(
            f"{len(values)} secrets given; a sandbox holds at most {MAX_SECRETS}",
            "pass fewer --secret options (one secret may hold a whole file)",
        )
    for name, value in values.items():
        validate_name(name)
        if not value:
            raise invalid(f"secret {name} is empty", "give it a value: --secret NAME=VALUE")
        if "\0" in value:
            raise invalid(
                f"secret {name} holds a NUL byte",
                "a secret must be text a variable can hold; encode binary data (base64)",
            )
        if len(value.encode()) > MAX_VALUE:
            raise invalid(
                f"secret {name} is over {MAX_VALUE // 1024} KiB",
                "pass a smaller value, or copy large files in with 'grove file push'",
            )
    return dict(values)


def parse_secret_env(items: Iterable[str], known: Iterable[str]) -> dict[str, str]:
    """--secret-env NAME[=VARIABLE] items -> {VARIABLE: NAME}, each NAME one of known."""
    have = set(known)
    wanted: dict[str, str] = {}
    for item in items:
        name, _, variable = item.partition("=")
        validate_name(name)
        variable = variable or name
        if not NAME.match(variable):
            raise invalid(
                f"invalid variable name for secret {name}",
                "use --secret-env NAME or NAME=VARIABLE with a shell-style VARIABLE",
            )
        if name not in have:
            listed = ", ".join(sorted(have)) or "none"
            raise GroveError(
                "secret_not_found",
                f"the sandbox has no secret named {name} (it has: {listed})",
                "give it at create with --secret NAME=VALUE",
            )
        wanted[variable] = name
    return wanted


def validate_variable(key: str) -> None:
    """An environment variable a call sets (env=): shell-style, so the guest can export it."""
    if not key or "=" in key or "\0" in key or not (key[0].isalpha() or key[0] == "_"):
        raise invalid(
            f"invalid variable name '{key[:64]}'", "use NAME=VALUE with a shell-style NAME"
        )
