"""A sandbox's traffic, read from the kernel's counters of its host-side network device.

The device is the host's end of the sandbox's link: what the host side transmits is what the
sandbox receives, and the other way round. A counter that cannot be read is no datum (None),
never 0.
"""

from __future__ import annotations

from pathlib import Path

SYS_CLASS_NET = Path("/sys/class/net")


def _counter(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def traffic(device: str, root: Path = SYS_CLASS_NET) -> tuple[int | None, int | None]:
    """(bytes the sandbox received, bytes it sent) behind the host-side device; None for a
    counter that cannot be read (no such device, or no device at all)."""
    if not device or "/" in device or device in (".", ".."):
        return None, None
    stats = root / device / "statistics"
    return _counter(stats / "tx_bytes"), _counter(stats / "rx_bytes")
