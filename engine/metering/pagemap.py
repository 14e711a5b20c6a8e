"""Which guest pages a process holds privately, from /proc/PID/pagemap.

``AnonScanner`` counts a process's anonymous pages in given address ranges with the
PAGEMAP_SCAN ioctl: Linux 6.7+ walks only the ranges asked for and returns runs of matching
pages, so counting the CoW copies inside guest RAM costs well under a full smaps walk (which
formats every mapping of the process). On older kernels ``anon_kib`` returns None and the
caller walks smaps instead. ``private_pages`` maps, page by page, where a VM's guest RAM is its
own copy and where it still reads its memory file (the plain pagemap read: any kernel).
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
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
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


# Flag bits of a pagemap entry's top byte (bits 56-63): present (63), swapped (62), file page
# or shared anonymous (61). Private: present or swapped, and not the file's page.
_PRIVATE_BY_TOP_BYTE = bytes(1 if (top & 0x20) == 0 and top & 0xC0 else 0 for top in range(256))


def guest_mappings(pid: int, mem_path: str) -> list[tuple[int, int, int]]:
    """(start address, end address, first file page) of each mapping pid has of mem_path."""
    target = os.path.realpath(mem_path)
    found = []
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].rstrip("\n") == target:
                low, high = (int(x, 16) for x in fields[0].split("-"))
                found.append((low, high, int(fields[2], 16) // PAGE_SIZE))
    return found


def private_pages(pid: int, mem_path: str, npages: int) -> bytearray:
    """One byte per page of the memory file at mem_path, as process pid maps it: 1 where the
    process holds its own copy (written, or swapped out), 0 where it reads the file's page.
    A page no mapping covers counts as private (the caller then keeps it)."""
    private = bytearray(b"\x01") * npages
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    try:
        for low, high, first in guest_mappings(pid, mem_path):
            count = min((high - low) // PAGE_SIZE, npages - first)
            if count <= 0:
                continue
            entries = os.pread(fd, count * 8, low // PAGE_SIZE * 8)
            # Little-endian u64s: every 8th byte is an entry's top byte, with the flags.
            private[first : first + count] = entries[7::8].translate(_PRIVATE_BY_TOP_BYTE)
    finally:
        os.close(fd)
    return private


def map_in(pid: int, mem_path: str, chunk: int = 1 << 20) -> None:
    """Fault every page of pid's mappings of mem_path into its page tables, by reading them
    through /proc/PID/mem (the kernel faults them in on pid's behalf), so that a migration in
    the pause that follows reads every page without a fault."""
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    try:
        for low, high, _first in guest_mappings(pid, mem_path):
            for address in range(low, high, chunk):
                os.pread(fd, min(chunk, high - address), address)
    finally:
        os.close(fd)
