"""Sandbox time-to-live: durations as people type them (90s, 10m, 2h, 1h30m), the range the
engine accepts, the engine's default (GROVE_DEFAULT_TTL) and how a remaining time (any span)
reads.

Pure: the CLI checks a --ttl here before any engine call, the engine checks the same range on
every request and its default at start, the dashboard and the CLI show what remains alike.
"""

from __future__ import annotations

import os
import re

from engine.errors import GroveError, invalid

#: The longest TTL accepted: longer is a typo more often than an intent (and a timer armed a
#: year out tells nobody anything).
MAX_TTL_S = 366 * 86400.0
ENV_DEFAULT = "GROVE_DEFAULT_TTL"
#: What a sandbox without a TTL shows where others show their remaining time: no TTL is not
#: a missing datum, so it is never '-'.
NEVER = "never"

_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
# Each part a number and a unit, the units largest first and each at most once: 1h30m, 2d.
_DURATION = re.compile(
    r"(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?"
)
REMEDY = "pass a number with a unit: 90s, 10m, 2h, 1h30m or 2d (at most 366d)"


def parse(text: str, allow_zero: bool = False) -> float:
    """Seconds in text; with allow_zero, '0' is accepted (no limit) and returns 0."""
    value = text.strip().lower()
    if allow_zero and value in ("0", "0s"):
        return 0.0
    match = _DURATION.fullmatch(value)
    if not value or match is None or not any(match.groupdict().values()):
        hint = "; 0 for no limit" if allow_zero else ""
        raise invalid(f"invalid duration '{text}'", REMEDY + hint)
    seconds = sum(float(n) * _UNITS[unit] for unit, n in match.groupdict().items() if n)
    return check(seconds, allow_zero, f"duration '{text}'")


def check(seconds: float, allow_zero: bool = False, what: str = "ttl_s") -> float:
    """seconds if it is a TTL the engine takes: more than 0 (or 0 with allow_zero), at most
    MAX_TTL_S; else an invalid_argument error naming what."""
    if seconds != seconds or seconds < 0 or (seconds == 0 and not allow_zero):
        lowest = "0 (no limit) or more" if allow_zero else "more than 0"
        raise invalid(f"invalid {what}: {seconds:g} s", f"pass {lowest} seconds, up to 366 days")
    if seconds > MAX_TTL_S:
        raise invalid(f"invalid {what}: more than 366 days", "pass at most 366 days")
    return seconds


def default_from_env() -> float | None:
    """The engine's TTL for sandboxes created without one; None: no limit (unset, '' or 0)."""
    text = os.environ.get(ENV_DEFAULT, "").strip()
    if not text:
        return None
    try:
        seconds = parse(text, allow_zero=True)
    except GroveError as exc:
        raise GroveError(
            "invalid_config",
            f"{ENV_DEFAULT}: {exc.message}",
            f"set {ENV_DEFAULT} to a duration such as 30m, 2h or 1h30m, or unset it",
        ) from None
    return seconds or None


def remaining(expires_at: float | None, now: float) -> str:
    """What is left as a table shows it: 42s, 4m12s, 1h30m, 2d03h; 0s once due (until the
    reaper has been); NEVER without a TTL."""
    if not expires_at:
        return NEVER
    return span(max(0, int(expires_at - now + 0.999)))  # rounded up: '0s' only once it is due


def span(seconds: int) -> str:
    """A whole number of seconds as tables show it (ages and remaining times alike)."""
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d{(seconds % 86400) // 3600:02d}h"
