"""Secret values on the host: one 0700 directory per owner (a sandbox, or a snapshot whose
memory holds them), one 0600 file per secret. The vault lives on tmpfs beside the guest memory
files, so values never reach a disk; wiping overwrites each file with zeros before unlinking.

Only the vault holds values: the database keeps names with salted hashes (digests)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
from pathlib import Path


def digest(value: str) -> str:
    """A salted hash: tells two values apart without being a lookup key for guessed ones."""
    salt = secrets.token_hex(8)
    return f"sha256:{salt}:{hashlib.sha256((salt + value).encode()).hexdigest()}"


def shred(path: Path) -> None:
    """Overwrite a file holding secret values with zeros, then unlink it."""
    with contextlib.suppress(OSError):
        size = path.stat().st_size
        with open(path, "r+b") as out:
            out.write(b"\0" * size)
            out.flush()
            os.fsync(out.fileno())
    path.unlink(missing_ok=True)


class Vault:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, owner: str) -> Path:
        if not owner or "/" in owner or owner.startswith("."):
            raise ValueError(f"bad vault owner {owner!r}")
        return self.root / owner

    def put(self, owner: str, values: dict[str, str]) -> dict[str, str]:
        """Write owner's secrets (replacing any); returns their digests for the database."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        folder = self._dir(owner)
        self.wipe(owner)
        folder.mkdir(mode=0o700)
        for name, value in values.items():
            fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(value)
        return {name: digest(value) for name, value in values.items()}

    def read(self, owner: str) -> dict[str, str]:
        folder = self._dir(owner)
        if not folder.is_dir():
            return {}
        return {path.name: path.read_text() for path in sorted(folder.iterdir())}

    def copy(self, source: str, dest: str) -> dict[str, str]:
        values = self.read(source)
        return self.put(dest, values) if values else {}

    def wipe(self, owner: str) -> None:
        folder = self._dir(owner)
        if not folder.is_dir():
            return
        for path in folder.iterdir():
            shred(path)
        shutil.rmtree(folder, ignore_errors=True)

    def owners(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())
