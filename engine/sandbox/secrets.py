"""A sandbox's secrets: kept on the host in a 0600 file, handed to its commands as variables."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from engine.errors import invalid

SECRETS_FILE = "secrets.json"


def validate_env_key(key: str) -> None:
    if not key or "=" in key or "\0" in key or not (key[0].isalpha() or key[0] == "_"):
        raise invalid(f"invalid variable name '{key}'", "use NAME=VALUE with a shell-style NAME")


def write(sandbox_dir: Path, secrets: dict[str, str]) -> None:
    fd = os.open(sandbox_dir / SECRETS_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(secrets, out)


def read(sandbox_dir: Path) -> dict[str, str]:
    path = sandbox_dir / SECRETS_FILE
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {str(k): str(v) for k, v in data.items()}


def inherit(parent_dir: Path, child_dir: Path) -> None:
    """A fork child holds copies of its parent's secrets (only forked when allowed)."""
    source = parent_dir / SECRETS_FILE
    if source.exists():
        shutil.copy2(source, child_dir / SECRETS_FILE)
