"""Count a process's anonymous pages in given address ranges with the PAGEMAP_SCAN ioctl.

Linux 6.7+ walks only the ranges asked for and returns runs of matching pages, so counting the
CoW copies inside guest RAM costs well under a full smaps walk (which formats every mapping of
the process). On older kernels ``anon_kib`` returns None and the caller walks smaps instead.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from collections.abc import Sequence


class _ScanArg(ctypes.Structure):
    # struct pm_scan_arg (include/uapi/linux/fs.h)
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "size",
            "flags",
            "start",
            "end",
            "walk_end",
            "vec",
            "vec_len",
            "max_pages",
            "category_inverted",
            "category_mask",
            "category_anyof_mask",
            "return_mask",
        )
    ]


class _Region(ctypes.Structure):
    # struct page_region
    _fields_ = [
        ("start", ctypes.c_uint64),
        ("end", ctypes.c_uint64),
        ("categories", ctypes.c_uint64),
    ]


# _IOWR('f', 16, struct pm_scan_arg)
PAGEMAP_SCAN = (3 << 30) | (ctypes.sizeof(_ScanArg) << 16) | (ord("f") << 8) | 16
PAGE_IS_FILE = 1 << 2  # file-backed or shared: a page read through from the memory file
PAGE_IS_PRESENT = 1 << 3
_VEC_LEN = 1024
_UNSUPPORTED = (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP)


class AnonScanner:
    """Reusable scanner; ``available`` turns False for good once the kernel says no."""

    def __init__(self) -> None:
        self.available = True
        self._vec = (_Region * _VEC_LEN)()
        self._vec_addr = ctypes.addressof(self._vec)

    def anon_kib(self, pid: int, ranges: Sequence[tuple[int, int]]) -> int | None:
        """Present anonymous pages in ranges, in KiB; None when the scan cannot be done."""
        if not self.available:
            return None
        try:
            fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            total = 0
            for start, end in ranges:
                total += self._scan(fd, start, end)
            return total // 1024
        except OSError as exc:
            if exc.errno in _UNSUPPORTED:
                self.available = False
            return None
        finally:
            os.close(fd)

    def _scan(self, fd: int, start: int, end: int) -> int:
        total = 0
        vec = self._vec
        while start < end:
            arg = _ScanArg(
                size=ctypes.sizeof(_ScanArg),
                start=start,
                end=end,
                vec=self._vec_addr,
                vec_len=_VEC_LEN,
                # present and not file-backed: the copies this process made
                category_inverted=PAGE_IS_FILE,
                category_mask=PAGE_IS_PRESENT | PAGE_IS_FILE,
                return_mask=PAGE_IS_PRESENT,
            )
            found = fcntl.ioctl(fd, PAGEMAP_SCAN, arg)
            for i in range(found):
                total += vec[i].end - vec[i].start
            if found < _VEC_LEN or arg.walk_end <= start:
                break
            start = arg.walk_end  # the vector filled up: continue where the walk stopped
        return total
