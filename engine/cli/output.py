"""How the CLI speaks: aligned tables, JSON, errors with a remedy, progress lines."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from engine.errors import GroveError
from engine.sandbox import ttl


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")


def print_error(error: GroveError, as_json: bool) -> None:
    if as_json:
        emit_json({"error": error.to_dict()})
    else:
        print(f"error: {error.message}", file=sys.stderr)
        if error.remedy:
            print(f"  remedy: {error.remedy}", file=sys.stderr)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def iec(num: float | None) -> str:
    if num is None:
        return "-"
    value = float(num)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def age(since: float, now: float | None = None) -> str:
    return ttl.span(max(0, int((now or time.time()) - since)))


class Progress:
    """One status line on stderr: redrawn in place on a terminal, one line per stage otherwise."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self._last = ""
        self._started = time.monotonic()

    def update(self, stage: str, fraction: float | None) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self._started
        if fraction is not None and fraction >= 0:
            filled = int(fraction * 20)
            bar = f"[{'#' * filled}{'.' * (20 - filled)}] {fraction * 100:3.0f}%"
        else:
            bar = "[" + "." * 20 + "]  ...."
        line = f"{bar} {elapsed:5.1f}s {stage}"
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + line[:200])
            sys.stderr.flush()
        elif stage != self._last:
            sys.stderr.write(line + "\n")
        self._last = stage

    def finish(self, message: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            sys.stderr.write("\r\x1b[2K")
        sys.stderr.write(message + "\n")
        sys.stderr.flush()


@contextmanager
def waiting(what: str, enabled: bool = True, delay: float = 0.4) -> Iterator[None]:
    """Show elapsed time on a terminal while a slow call runs; silent when it is quick."""
    if not enabled or not sys.stderr.isatty():
        yield
        return
    done = threading.Event()
    started = time.monotonic()

    def tick() -> None:
        if done.wait(delay):
            return
        frames = "|/-\\"
        i = 0
        while not done.wait(0.1):
            elapsed = time.monotonic() - started
            sys.stderr.write(f"\r\x1b[2K{frames[i % 4]} {what} {elapsed:4.1f}s")
            sys.stderr.flush()
            i += 1
        sys.stderr.write("\r\x1b[2K")
        sys.stderr.flush()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
