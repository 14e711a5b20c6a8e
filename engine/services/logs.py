"""A service's output on the host: timestamped lines per stream, bounded by rotation.

Kept under ``$GROVE_HOME/logs/<sandbox-id>/<service>.log`` (JSON lines ``{"ts", "stream",
"text"}``), outside the sandbox's own directory, so the log outlives the process, the guest and
the sandbox itself (terminate keeps it). Each file is rotated at ``MAX_BYTES`` and ``KEEP``
older files are kept, so one service never holds more than ``(KEEP + 1) * MAX_BYTES``.
Followers get new lines from memory, without re-reading the files.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from engine.secrets.redact import Redactor

MAX_BYTES = 4 * 1024 * 1024
KEEP = 2
#: Lines longer than this are cut into several (a binary blob without newlines stays bounded).
MAX_LINE = 16 * 1024
RECENT = 4096

STREAMS = {1: "stdout", 2: "stderr"}
GROVE = "grove"  # lines the engine adds (started, exited, restarting)


@dataclass(frozen=True, slots=True)
class LogLine:
    ts: float
    stream: str
    text: str
    seq: int = 0

    def to_json(self) -> str:
        return json.dumps({"ts": round(self.ts, 6), "stream": self.stream, "text": self.text})

    @classmethod
    def from_json(cls, raw: bytes | str) -> LogLine | None:
        try:
            data = json.loads(raw)
            return cls(float(data["ts"]), str(data["stream"]), str(data["text"]))
        except (ValueError, KeyError, TypeError):
            return None


class LineSplitter:
    """Bytes of one stream in, complete text lines out; a partial line waits for more."""

    def __init__(self) -> None:
        self._partial = bytearray()

    @property
    def pending(self) -> bool:
        return bool(self._partial)

    def feed(self, data: bytes) -> list[str]:
        self._partial += data
        *lines, rest = self._partial.split(b"\n")
        self._partial = bytearray(rest)
        out = [_text(line) for line in lines]
        while len(self._partial) > MAX_LINE:
            out.append(_text(self._partial[:MAX_LINE]))
            del self._partial[:MAX_LINE]
        return [piece for line in out for piece in _cut(line)]

    def flush(self) -> list[str]:
        if not self._partial:
            return []
        line, self._partial = _text(self._partial), bytearray()
        return _cut(line)


def _text(raw: bytes | bytearray) -> str:
    return bytes(raw).decode("utf-8", errors="replace").removesuffix("\r")


def _cut(line: str) -> list[str]:
    if len(line) <= MAX_LINE:
        return [line]
    return [line[i : i + MAX_LINE] for i in range(0, len(line), MAX_LINE)]


class ServiceLog:
    def __init__(self, directory: Path, name: str, redactor: Redactor | None = None) -> None:
        self.directory = directory
        self.redactor = redactor or Redactor()
        self.path = directory / f"{name}.log"
        self._file: IO[bytes] | None = None
        self._size = 0
        self._seq = 0
        self._recent: collections.deque[LogLine] = collections.deque(maxlen=RECENT)
        self._changed = asyncio.Event()

    # -- writing -----------------------------------------------------------------------------

    def _open(self) -> IO[bytes]:
        if self._file is None:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._file = os.fdopen(fd, "ab")
            self._size = os.fstat(fd).st_size
        return self._file

    def _rotate(self) -> None:
        self.close()
        for index in range(KEEP, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            newer = (
                self.path if index == 1 else self.path.with_name(f"{self.path.name}.{index - 1}")
            )
            with contextlib.suppress(FileNotFoundError):
                newer.replace(older)

    def append(self, stream: str, texts: Iterable[str], ts: float | None = None) -> None:
        stamp = time.time() if ts is None else ts
        for text in texts:
            self._seq += 1
            # Streams arrive redacted (split values too); this catches the engine's own notes.
            line = LogLine(stamp, stream, self.redactor.text(text), self._seq)
            raw = (line.to_json() + "\n").encode("utf-8")
            if self._size and self._size + len(raw) > MAX_BYTES:
                self._rotate()
            out = self._open()
            out.write(raw)
            self._size += len(raw)
            self._recent.append(line)
        if self._file is not None:
            self._file.flush()
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def note(self, text: str) -> None:
        """A line from the engine itself (started, exited, restarting...)."""
        self.append(GROVE, [text])

    def copy_to(self, directory: Path) -> None:
        """Copy the files (not the followers) to another directory, e.g. a fork child's."""
        if self._file is not None:
            self._file.flush()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path in self.files():
            shutil.copyfile(path, directory / path.name)
            os.chmod(directory / path.name, 0o600)

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    # -- reading -----------------------------------------------------------------------------

    def files(self) -> list[Path]:
        """Oldest first."""
        older = [self.path.with_name(f"{self.path.name}.{i}") for i in range(KEEP, 0, -1)]
        return [p for p in (*older, self.path) if p.exists()]

    def read(self, tail: int | None = None, since: float | None = None) -> list[LogLine]:
        """Lines on disk: all, the last ``tail``, and/or those at or after ``since``."""
        lines: list[LogLine] = []
        for path in reversed(self.files()):
            try:
                raw = path.read_bytes().splitlines()
            except OSError:
                continue
            chunk = [line for r in raw if (line := LogLine.from_json(r)) is not None]
            if since is not None:
                chunk = [line for line in chunk if line.ts >= since]
            lines[:0] = chunk
            if tail is not None and len(lines) >= tail:
                break
            if since is not None and len(chunk) < len(raw):
                break  # older files are entirely before `since`
        if tail is not None:
            lines = lines[-tail:] if tail > 0 else []
        return lines

    @property
    def last_seq(self) -> int:
        return self._seq

    def since_seq(self, seq: int) -> tuple[list[LogLine], bool]:
        """Lines appended after ``seq`` from memory; False if some were already dropped."""
        lines = [line for line in self._recent if line.seq > seq]
        complete = not self._recent or self._recent[0].seq <= seq + 1 or seq >= self._seq
        return lines, complete

    async def wait(self, timeout: float | None = None) -> None:
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
