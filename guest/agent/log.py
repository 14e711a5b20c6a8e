"""Minimal stderr logging (``logging`` costs import time under TCG and we need little of it).

Never pass request payloads here: exec environments carry secrets.
"""

from __future__ import annotations

import os
import sys
import time

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_level = _LEVELS.get(os.environ.get("GROVE_AGENT_LOG", "info").lower(), 20)


def set_level(name: str) -> None:
    global _level
    _level = _LEVELS.get(name.lower(), _level)


def enabled(level: str) -> bool:
    return _LEVELS[level] >= _level


def _emit(level: str, message: str) -> None:
    if _LEVELS[level] < _level:
        return
    stamp = time.strftime("%H:%M:%S", time.gmtime())
    try:
        sys.stderr.write(f"{stamp} grove-agent {level}: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # a closed console must not take the agent down


def debug(message: str) -> None:
    _emit("debug", message)


def info(message: str) -> None:
    _emit("info", message)


def warning(message: str) -> None:
    _emit("warning", message)


def error(message: str) -> None:
    _emit("error", message)
