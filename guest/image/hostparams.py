"""Host timing facts passed on the guest kernel command line.

microvm under TCG hangs about one boot in five at "Marking TSC unstable" while the guest
calibrates its clocks; giving it the host's TSC frequency and loops_per_jiffy skips the
calibration (12 of 12 boots fine).
"""

from __future__ import annotations

import re
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
TSC_FREQ = Path("/sys/devices/system/cpu/cpu0/tsc_freq_khz")
DEBIAN_HZ = 250  # CONFIG_HZ of Debian's x86-64 kernels


def _cpuinfo_field(name: str) -> float:
    m = re.search(rf"^{name}\s*:\s*([0-9.]+)", CPUINFO.read_text(), re.MULTILINE)
    if m is None:
        raise RuntimeError(f"no '{name}' in {CPUINFO}")
    return float(m.group(1))


def tsc_khz() -> int:
    """The host TSC frequency in kHz (sysfs when the kernel exports it, else cpu MHz)."""
    try:
        return int(TSC_FREQ.read_text().strip())
    except (OSError, ValueError):
        return round(_cpuinfo_field("cpu MHz") * 1000)


def lpj(hz: int = DEBIAN_HZ) -> int:
    """loops_per_jiffy the guest would calibrate: bogomips * 500000 / HZ."""
    return round(_cpuinfo_field("bogomips") * 500000 / hz)


def kernel_cmdline(
    hostname: str = "grove", hz: int = DEBIAN_HZ, extra: tuple[str, ...] = ()
) -> str:
    """The command line Grove boots its guests with (console on the first serial port)."""
    args = [
        "console=ttyS0",
        "quiet",
        "reboot=t",
        "panic=-1",
        "pci=off",
        f"tsc_early_khz={tsc_khz()}",
        f"lpj={lpj(hz)}",
        "root=/dev/vda",
        f"grove.hostname={hostname}",
        *extra,
    ]
    return " ".join(args)
