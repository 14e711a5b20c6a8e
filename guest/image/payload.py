"""The agent payload: the guest-side Python files copied into every initramfs.

The payload is whatever exists at build time: ``guest/__init__.py``, ``guest/protocol.py`` and
every ``*.py`` under ``guest/agent/``. Its digest keys the initramfs layer, so editing the agent
rebuilds only the initramfs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# The directory that contains the ``guest`` package (the project root in a checkout).
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def payload_files(root: Path | None = None) -> list[tuple[str, Path]]:
    """(path relative to ``root``, absolute path) for each payload file, sorted for stability."""
    base = SOURCE_ROOT if root is None else root
    guest = base / "guest"
    files = [guest / "__init__.py", guest / "protocol.py", guest / "tarstream.py"]
    agent = guest / "agent"
    if agent.is_dir():
        files.extend(p for p in agent.rglob("*.py") if "__pycache__" not in p.parts)
    found = [(p.relative_to(base).as_posix(), p) for p in files if p.is_file()]
    return sorted(found)


def payload_digest(root: Path | None = None) -> str:
    """sha256 over the names and contents of the payload files."""
    digest = hashlib.sha256()
    for rel, path in payload_files(root):
        data = path.read_bytes()
        digest.update(f"{rel}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()
