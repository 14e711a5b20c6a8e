"""Human formatting for the dashboard. A missing datum is '-', never a made-up 0."""

from __future__ import annotations

from engine.sandbox import ttl

DASH = "-"
#: The last stretch before a sandbox expires, shown in the theme's warning colour.
EXPIRY_WARNING_S = 60.0


def size(n: int | None) -> str:
    if n is None:
        return DASH
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.1f} {unit}" if abs(value) < 100 else f"{value:.0f} {unit}"
        value /= 1024
    return DASH  # unreachable


def short_size(n: int | None) -> str:
    """At most four characters, for a pair in one cell: 512B, 9.5K, 340K, 1.2M, 12G."""
    if n is None:
        return DASH
    value = float(n)
    for unit in ("B", "K", "M", "G", "T", "P", "E"):
        if value < 999.5 or unit == "E":
            if unit == "B":
                return f"{int(value)}B"
            return f"{value:.1f}{unit}" if value < 9.95 else f"{value:.0f}{unit}"
        value /= 1024
    return DASH  # unreachable


def pair(first: int | None, second: int | None) -> str:
    """'12M/340K'; '-' when neither is known."""
    if first is None and second is None:
        return DASH
    return f"{short_size(first)}/{short_size(second)}"


def percent(p: float | None) -> str:
    return DASH if p is None else f"{p:.1f}%"


def age(created_at: float, now: float) -> str:
    if created_at <= 0:
        return DASH
    return ttl.span(max(0, int(now - created_at)))


def expires_in(expires_at: float | None, now: float) -> str:
    """'4m12s' left; 'never' without a TTL (no TTL is not a missing datum: never '-')."""
    return ttl.remaining(expires_at, now)


def expiring_soon(expires_at: float | None, now: float) -> bool:
    return expires_at is not None and expires_at - now <= EXPIRY_WARNING_S


def short_id(sandbox_id: str) -> str:
    return sandbox_id[:12]
