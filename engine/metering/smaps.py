"""One QEMU process's memory from /proc/PID/smaps, split at the guest-RAM mapping.

Guest RAM is a file on tmpfs mapped MAP_PRIVATE over a frozen template (or MAP_SHARED over a
sandbox's own file). Inside that mapping:

- ``Anonymous`` pages are the copies this process wrote: its own, unique guest memory;
- the other resident pages are template pages, shared with every sibling mapping the file.

Trap: tmpfs pages are always "dirty", so template pages mapped by only one process show up as
``Private_Dirty`` (and psutil's USS counts them too). Only ``Anonymous`` tells a CoW copy.

Reading smaps costs 2-4 ms of kernel time per idle 512 MiB TCG guest (it walks every resident
page and formats every mapping), so the meter walks rarely: /proc/PID/status counters (O(1))
tell it when a walk still holds, and ``pagemap`` counts the copies when they moved.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

KIB = 1024
_READ_CHUNK = 1 << 18

# Literal-prefixed patterns: the regex engine skips to each candidate with a fast search
# (a ^-anchored MULTILINE pattern is ~5x slower on a 300 KB smaps).
_PRIVATE = re.compile(rb"\nPrivate_(?:Clean|Dirty): +(\d+) kB")
_RSS = re.compile(rb"\nRss: +(\d+) kB")
_ANON = re.compile(rb"\nAnonymous: +(\d+) kB")
_DELETED = b" (deleted)"


@dataclass(frozen=True, slots=True)
class GuestMapping:
    """The guest-RAM mapping (all of its VMAs), in KiB."""

    rss_kib: int
    anon_kib: int  # pages copied on write: this process's own guest memory
    private_kib: int  # Private_Clean + Private_Dirty (includes tmpfs pages only it maps)
    shared: bool  # MAP_SHARED (share=on): the process writes the file itself
    ranges: tuple[tuple[int, int], ...] = ()  # its VMAs' address ranges

    @property
    def file_kib(self) -> int:
        """Resident pages read through from the memory file (template pages when private)."""
        return max(0, self.rss_kib - self.anon_kib)


@dataclass(frozen=True, slots=True)
class ProcessMemory:
    """A parsed smaps, in KiB."""

    rss_kib: int  # what ps/top show for the whole process
    private_kib: int  # Private_Clean + Private_Dirty of every mapping
    anon_kib: int  # Anonymous of every mapping (equals RssAnon in /proc/PID/status)
    guest: GuestMapping | None  # None: the guest-RAM file is not mapped

    @property
    def vmm_overhead_kib(self) -> int:
        """The process's own memory outside guest RAM: anonymous and private file-backed pages.

        Shared library pages mapped by other processes too are Shared_*, so they are not
        charged here."""
        guest = self.guest.private_kib if self.guest is not None else 0
        return max(0, self.private_kib - guest)

    @property
    def file_private_kib(self) -> int:
        """Private file-backed pages outside guest RAM (the non-anonymous part of the VMM's)."""
        guest_anon = self.guest.anon_kib if self.guest is not None else 0
        return max(0, self.vmm_overhead_kib - (self.anon_kib - guest_anon))


@dataclass(frozen=True, slots=True)
class StatusCounters:
    """Kernel RSS counters from /proc/PID/status (O(1) to read), in KiB."""

    rss_kib: int
    anon_kib: int
    file_kib: int
    shmem_kib: int

    def fingerprint(self) -> tuple[int, int, int, int]:
        return (self.rss_kib, self.anon_kib, self.file_kib, self.shmem_kib)


def read_proc(path: str) -> bytes:
    """The whole file in as few reads as the kernel allows (seq_file hands out pages)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, _READ_CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_smaps(pid: int) -> bytes:
    return read_proc(f"/proc/{pid}/smaps")


def parse_smaps(data: bytes, guest_path: str | bytes) -> ProcessMemory:
    """Totals of the whole process and the guest-RAM mapping found by its file's path."""
    path = guest_path.encode() if isinstance(guest_path, str) else guest_path
    return ProcessMemory(
        rss_kib=sum(map(int, _RSS.findall(data))),
        private_kib=sum(map(int, _PRIVATE.findall(data))),
        anon_kib=sum(map(int, _ANON.findall(data))),
        guest=_guest(data, path),
    )


def _guest(data: bytes, path: bytes) -> GuestMapping | None:
    if not path:
        return None
    rss = anon = private = 0
    shared = False
    ranges: list[tuple[int, int]] = []
    needle = b" " + path
    pos = 0
    while True:
        at = data.find(needle, pos)
        if at < 0:
            break
        end = at + len(needle)
        pos = end
        # Only a header line's last field: the path then ends the line (maybe "(deleted)").
        line_end = data.find(b"\n", end)
        if line_end < 0:
            line_end = len(data)
        tail = data[end:line_end]
        if tail and tail != _DELETED:
            continue
        start = data.rfind(b"\n", 0, at) + 1
        header = data[start:at].split()
        if len(header) < 2 or b"-" not in header[0]:
            continue
        low, _, high = header[0].partition(b"-")
        try:
            ranges.append((int(low, 16), int(high, 16)))
        except ValueError:
            continue
        shared = shared or header[1][3:4] == b"s"
        block_end = data.find(b"\nVmFlags:", line_end)
        if block_end < 0:
            block_end = len(data)
        fields = _fields(data[line_end + 1 : block_end])
        rss += fields.get(b"Rss", 0)
        anon += fields.get(b"Anonymous", 0)
        private += fields.get(b"Private_Clean", 0) + fields.get(b"Private_Dirty", 0)
        pos = block_end
    if not ranges:
        return None
    return GuestMapping(
        rss_kib=rss, anon_kib=anon, private_kib=private, shared=shared, ranges=tuple(ranges)
    )


def _fields(block: bytes) -> dict[bytes, int]:
    out: dict[bytes, int] = {}
    for line in block.split(b"\n"):
        key, sep, rest = line.partition(b":")
        if not sep:
            continue
        parts = rest.split()
        if len(parts) == 2 and parts[1] == b"kB" and parts[0].isdigit():
            out[key] = int(parts[0])
    return out


def read_status(pid: int) -> StatusCounters:
    return parse_status(read_proc(f"/proc/{pid}/status"))


def parse_status(data: bytes) -> StatusCounters:
    values: dict[bytes, int] = {}
    for key in (b"VmRSS", b"RssAnon", b"RssFile", b"RssShmem"):
        at = data.find(b"\n" + key + b":")
        if at < 0:
            raise ValueError(f"no {key.decode()} in /proc/PID/status")
        end = data.find(b"\n", at + 1)
        values[key] = int(data[at + len(key) + 2 : end].split()[0])
    return StatusCounters(
        rss_kib=values[b"VmRSS"],
        anon_kib=values[b"RssAnon"],
        file_kib=values[b"RssFile"],
        shmem_kib=values[b"RssShmem"],
    )
