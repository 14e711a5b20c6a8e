"""Guest paths and the limits every file verb checks before anything is written."""

from __future__ import annotations

import os
import posixpath

from engine.errors import GroveError, invalid

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

#: FileRead / DiskRead answer in one message: reads above this go through pull.
DEFAULT_READ_BYTES = 64 * KIB
MAX_READ_BYTES = 1 * MIB
DEFAULT_PUSH_BYTES = 1 * GIB
MAX_PATH = 4096


def push_limit() -> int:
    """Bytes one push may carry (GROVE_PUSH_LIMIT, e.g. 2G or 500M; default 1 GiB)."""
    text = os.environ.get("GROVE_PUSH_LIMIT", "")
    return parse_size(text, "GROVE_PUSH_LIMIT") if text else DEFAULT_PUSH_BYTES


def parse_size(text: str, what: str) -> int:
    """'1G', '500M', '64K' or bytes; refused with a remedy otherwise."""
    units = {"": 1, "K": KIB, "M": MIB, "G": GIB, "T": 1024 * GIB}
    raw = text.strip().upper().removesuffix("IB").removesuffix("B")
    number, unit = raw, ""
    if raw and raw[-1] in units:
        number, unit = raw[:-1], raw[-1]
    try:
        value = float(number) * units[unit]
    except ValueError:
        value = -1
    if value <= 0:
        raise invalid(f"invalid size {text!r} for {what}", "use bytes or K/M/G, e.g. 500M")
    return int(value)


def guest_path(text: str, what: str = "path") -> str:
    """An absolute guest path, normalized; refused with a cause and a remedy otherwise."""
    if not text:
        raise invalid(f"no {what} given", "pass an absolute guest path, e.g. /root/project")
    if "\0" in text or "\n" in text or len(text) > MAX_PATH:
        raise invalid(f"invalid {what} {text[:80]!r}", "pass a plain absolute path")
    if not text.startswith("/"):
        raise invalid(
            f"{what} '{text}' is not absolute",
            f"guest paths start with /, e.g. /root/{text.lstrip('./') or 'file'}",
        )
    return posixpath.normpath(text).replace("//", "/")


def read_size(max_bytes: int) -> int:
    if max_bytes < 0:
        raise invalid(f"invalid --max-bytes {max_bytes}", "pass a positive number of bytes")
    size = max_bytes or DEFAULT_READ_BYTES
    if size > MAX_READ_BYTES:
        raise GroveError(
            "read_too_large",
            f"--max-bytes {size} is over the {MAX_READ_BYTES // MIB} MiB a read returns",
            "use 'grove pull ID PATH -o LOCAL' for larger files",
        )
    return size


def check_push_size(total: int, limit: int) -> None:
    if total < 0:
        raise invalid(f"invalid push size {total}", "upgrade the client")
    if total > limit:
        raise GroveError(
            "push_too_large",
            f"push of {total / MIB:.1f} MiB is over the {limit / MIB:.0f} MiB limit",
            "push less (--exclude), or raise the engine's GROVE_PUSH_LIMIT",
        )
