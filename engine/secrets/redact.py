"""Every secret value the engine knows becomes ``[REDACTED]`` in what the engine says.

One Redactor per engine holds the values of every owner in the vault (cross-sandbox redaction
only hides more). Text is redacted longest value first, so a value that contains another is
hidden whole. A stream (exec output, a shell, a service's log) goes through a StreamRedactor,
which holds back the tail of a chunk that could be the start of a value until the next chunk
shows whether it is: a value split across two chunks is still hidden."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

MARK = "[REDACTED]"
_MARK_BYTES = MARK.encode()


class Redactor:
    def __init__(self) -> None:
        self._owners: dict[str, frozenset[str]] = {}
        self._text: re.Pattern[str] | None = None
        self._bytes: re.Pattern[bytes] | None = None
        self._values: tuple[bytes, ...] = ()
        self._firsts: frozenset[int] = frozenset()
        #: Bumped when the set of values changes (streams rebuild their view of it).
        self.version = 0

    def add(self, owner: str, values: Iterable[str]) -> None:
        self._owners[owner] = frozenset(v for v in values if v)
        self._rebuild()

    def drop(self, owner: str) -> None:
        if self._owners.pop(owner, None) is not None:
            self._rebuild()

    def _rebuild(self) -> None:
        every = {v for values in self._owners.values() for v in values}
        ordered = sorted(every, key=lambda v: (-len(v.encode()), v))
        self._text = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        raw = [v.encode() for v in ordered]
        self._bytes = re.compile(b"|".join(map(re.escape, raw))) if raw else None
        self._values = tuple(raw)
        self._firsts = frozenset(v[0] for v in raw)
        self.version += 1

    @property
    def active(self) -> bool:
        return self._text is not None

    def text(self, text: str) -> str:
        return self._text.sub(MARK, text) if self._text is not None and text else text

    def data(self, data: bytes) -> bytes:
        return self._bytes.sub(_MARK_BYTES, data) if self._bytes is not None and data else data

    def value(self, value: Any) -> Any:
        """Strings anywhere in a JSON-like value (an event's detail, say)."""
        if self._text is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        return value

    def stream(self) -> StreamRedactor:
        return StreamRedactor(self)

    def _hold_start(self, buf: bytes, low: int) -> int:
        """Where the longest tail of buf that is a proper prefix of some value begins."""
        longest = len(self._values[0]) if self._values else 0
        for start in range(max(low, len(buf) - longest + 1), len(buf)):
            if buf[start] not in self._firsts:
                continue
            tail = buf[start:]
            if any(len(v) > len(tail) and v.startswith(tail) for v in self._values):
                return start
        return len(buf)

    def split(self, buf: bytes) -> tuple[bytes, bytes]:
        """buf -> (redacted bytes safe to emit, raw tail to hold for the next chunk).

        A match that starts before the held tail is final: a longer value starting at the same
        place would have made that place the start of the tail."""
        pattern = self._bytes
        if pattern is None:
            return buf, b""
        out: list[bytes] = []
        pos = 0
        hold = self._hold_start(buf, 0)
        for match in pattern.finditer(buf):
            if match.start() >= hold:
                break
            out += (buf[pos : match.start()], _MARK_BYTES)
            pos = match.end()
            if pos > hold:
                hold = self._hold_start(buf, pos)
        out.append(buf[pos:hold])
        return b"".join(out), buf[hold:]


class StreamRedactor:
    """One stream's redaction: feed chunks in order, flush at its end (or when idle)."""

    __slots__ = ("_held", "_redactor")

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._held = b""

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def feed(self, data: bytes) -> bytes:
        if not self._redactor.active and not self._held:
            return data
        out, self._held = self._redactor.split(self._held + data)
        return out

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return self._redactor.data(held)


class RedactingFilter(logging.Filter):
    """On every handler of the engine log: a record's message and traceback are redacted."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._redactor.active:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = self._redactor.text(message), None
        if record.exc_text:
            record.exc_text = self._redactor.text(record.exc_text)
        record.exc_info = None if record.exc_text else record.exc_info
        return True


def install_log_filter(redactor: Redactor) -> Callable[[], None]:
    """Redact on every handler the root logger has now; returns the undo."""
    handlers = list(logging.getLogger().handlers)
    log_filter = RedactingFilter(redactor)
    for handler in handlers:
        handler.addFilter(log_filter)

    def undo() -> None:
        for handler in handlers:
            handler.removeFilter(log_filter)

    return undo
