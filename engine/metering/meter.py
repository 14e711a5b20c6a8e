"""One metering sample of a set of sandboxes: the synchronous core the sampler runs each tick.

Everything here reads /proc and stat()s files; nothing starts a process or talks to a VM.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import psutil

from engine.metering import disk, net
from engine.metering.cpu import CpuMeter, read_stat
from engine.metering.filesystems import FilesystemTypes
from engine.metering.pagemap import AnonScanner
from engine.metering.sample import HostSample, Reading, SandboxSample
from engine.metering.smaps import (
    KIB,
    StatusCounters,
    parse_smaps,
    read_proc,
    read_smaps,
    read_status,
)

#: Every process's smaps is walked at least this often: the walk refreshes what the cheap
#: paths carry forward (private library pages, guest-RAM address ranges).
DEFAULT_MAX_WALK_AGE_S = 30.0
#: Counters racing a walk may put guest-RAM pages a little above RssShmem; more means the
#: guest RAM is not shmem at all (a memory file on a disk filesystem).
_SHMEM_RACE_KIB = 1024


@dataclass(frozen=True, slots=True)
class Target:
    """A sandbox as the sampler sees it. pid is set only when a live VM should be measured."""

    id: str
    name: str
    phase: str
    pid: int | None = None
    pid_start: int | None = None
    mem_path: str = ""
    disk_path: str = ""
    template_id: str | None = None
    guest_mem_used_bytes: int | None = None
    #: Its host-side network device ('' for none, e.g. user-mode networking).
    net_device: str = ""
    #: Its template's state when that is a delta on tmpfs (engine.fork.capture): the parent's
    #: own pages, host RAM that no process maps. '' for none.
    state_path: str = ""


# A sandbox's disk: its layers, None (no disk to measure) or why it could not be read.
_Chain = tuple[disk.Layer, list[disk.Layer]] | Exception | None


@dataclass(frozen=True, slots=True)
class _Split:
    """One process's memory, split at guest RAM, in KiB.

    Exact when taken: from a smaps walk, or from kernel counters (/proc/PID/status) plus a
    PAGEMAP_SCAN count of the CoW copies in guest RAM. Reused as is while the counters do not
    move at all.
    """

    owner: tuple[int, int, str]  # (pid, start, guest-RAM path on record)
    path: str  # the guest-RAM file it really maps
    fingerprint: tuple[int, int, int, int]
    walk_due: float  # monotonic time by which to walk smaps again
    guest_anon_kib: int
    guest_file_kib: int
    guest_shared: bool
    vmm_kib: int
    ranges: tuple[tuple[int, int], ...]
    #: shmem pages outside guest RAM at the walk; None: guest RAM is not shmem (no scan path)
    other_shmem_kib: int | None
    #: private file-backed pages outside guest RAM at the walk (libraries only it maps)
    file_private_kib: int

    @property
    def guest_rss_kib(self) -> int:
        return self.guest_anon_kib + self.guest_file_kib


@dataclass
class _Live:
    target: Target
    status: StatusCounters
    split: _Split
    cpu_percent: float | None
    file_key: disk.FileKey | None = None


@dataclass
class _MemFile:
    allocated: int | None  # None: stat failed (e.g. unlinked while mapped)
    in_ram: bool
    private_mappers: int = 0
    shared_mappers: int = 0
    max_file_bytes: int = 0  # largest count of its pages one mapper holds resident


class Meter:
    """Takes Readings; keeps what makes the next one cheap (CPU baselines, smaps, chains)."""

    def __init__(self, max_walk_age_s: float = DEFAULT_MAX_WALK_AGE_S, scan: bool = True) -> None:
        # 0: every sample walks every process's smaps (the slow, simple reference).
        self.max_walk_age_s = max_walk_age_s
        self.scanner = AnonScanner() if scan else None
        self.cpu = CpuMeter()
        self.chains = disk.ChainReader()
        self.filesystems = FilesystemTypes()
        self._splits: dict[str, _Split] = {}
        self._cmdline_paths: dict[tuple[int, int], str | None] = {}
        self._realpaths: dict[str, str] = {}
        #: How each process's memory was taken: full smaps walks, guest-RAM scans, reuses.
        self.walks = 0
        self.scans = 0
        self.reuses = 0

    def measure(self, targets: Sequence[Target], now: float | None = None) -> Reading:
        cpu_started = time.thread_time()
        now = time.time() if now is None else now
        mono = time.monotonic()
        stats = {}
        for t in targets:
            if t.pid is None:
                continue
            try:
                st = read_stat(t.pid)
            except (OSError, ValueError, IndexError):
                continue  # the process is gone: it costs nothing any more
            if t.pid_start is None or st.start == t.pid_start:  # else: a reused pid, not ours
                stats[t.id] = (t.pid, st)
        pids = frozenset((pid, st.start) for pid, st in stats.values())
        live: dict[str, _Live] = {}
        broken = False  # a running sandbox we could not read: host totals would be partial
        for t in targets:
            if t.id not in stats:
                continue
            pid, st = stats[t.id]
            try:
                status = read_status(pid)
                split = self._memory(t, pid, st.start, status, mono)
            except (FileNotFoundError, ProcessLookupError):
                continue
            except (OSError, ValueError):
                broken = True
                continue
            if split is None:
                broken = True
                continue
            percent = self.cpu.process(pid, st, mono)
            live[t.id] = _Live(t, status, split, percent)
        files = self._memory_files(live)
        disks = {t.id: self._disk(t) for t in targets}
        samples = [self._sandbox(t, live.get(t.id), files, disks[t.id], now) for t in targets]
        host = self._host(now, samples, live, files, broken, disks)
        self._forget(targets, pids)
        return Reading(
            sampled_at=now,
            sandboxes=tuple(samples),
            host=host,
            cost_s=time.thread_time() - cpu_started,
        )

    # memory

    def _memory(
        self, t: Target, pid: int, start: int, status: StatusCounters, mono: float
    ) -> _Split | None:
        path = self._realpath(t.mem_path)
        owner = (pid, start, path)
        fingerprint = status.fingerprint()
        last = self._splits.get(t.id)
        if last is not None and last.owner == owner and mono < last.walk_due:
            if last.fingerprint == fingerprint:
                self.reuses += 1
                return last
            scanned = self._scan(last, pid, status)
            if scanned is not None:
                self._splits[t.id] = scanned
                return scanned
        split = self._walk(owner, pid, status, mono)
        if split is None:
            self._splits.pop(t.id, None)
        else:
            self._splits[t.id] = split
        return split

    def _scan(self, last: _Split, pid: int, status: StatusCounters) -> _Split | None:
        """Counters moved: count the CoW copies in guest RAM; the rest follows from counters."""
        if self.scanner is None or last.other_shmem_kib is None:
            return None
        anon = self.scanner.anon_kib(pid, last.ranges)
        if anon is None:
            return None
        self.scans += 1
        return replace(
            last,
            fingerprint=status.fingerprint(),
            guest_anon_kib=anon,
            # Guest RAM is the process's only shmem mapping but for what the walk found.
            guest_file_kib=max(0, status.shmem_kib - last.other_shmem_kib),
            vmm_kib=max(0, status.anon_kib - anon) + last.file_private_kib,
        )

    def _walk(
        self, owner: tuple[int, int, str], pid: int, status: StatusCounters, mono: float
    ) -> _Split | None:
        data = read_smaps(pid)
        self.walks += 1
        memory = parse_smaps(data, owner[2])
        path = owner[2]
        if memory.guest is None:
            # The record may lag behind what the VM maps (e.g. mid-fork): ask QEMU's own argv.
            actual = self._cmdline_mem_path(pid, owner[1])
            if actual and actual != path:
                memory = parse_smaps(data, actual)
                path = actual
        guest = memory.guest
        if guest is None:
            return None
        outside = status.shmem_kib - guest.file_kib
        other: int | None = outside
        if outside < 0:
            other = 0 if outside >= -_SHMEM_RACE_KIB else None
        return _Split(
            owner=owner,
            path=path,
            fingerprint=status.fingerprint(),
            # Jittered, so sandboxes started together do not all walk in the same tick later.
            walk_due=mono + self.max_walk_age_s * random.uniform(0.75, 1.0),
            guest_anon_kib=guest.anon_kib,
            guest_file_kib=guest.file_kib,
            guest_shared=guest.shared,
            vmm_kib=memory.vmm_overhead_kib,
            ranges=guest.ranges,
            other_shmem_kib=other,
            file_private_kib=memory.file_private_kib,
        )

    def _realpath(self, path: str) -> str:
        if not path:
            return ""
        real = self._realpaths.get(path)
        if real is None:
            real = os.path.realpath(path)
            if len(self._realpaths) > 4096:
                self._realpaths.clear()
            self._realpaths[path] = real
        return real

    def _cmdline_mem_path(self, pid: int, start: int) -> str | None:
        key = (pid, start)
        if key not in self._cmdline_paths:
            try:
                argv = read_proc(f"/proc/{pid}/cmdline").split(b"\0")
            except OSError:
                return None
            self._cmdline_paths[key] = mem_path_from_argv(
                [a.decode(errors="surrogateescape") for a in argv]
            )
        found = self._cmdline_paths[key]
        return self._realpath(found) if found else None

    def _memory_files(self, live: dict[str, _Live]) -> dict[disk.FileKey, _MemFile]:
        """Each distinct guest-RAM file with who maps it, stat()ed once per sample."""
        files: dict[disk.FileKey, _MemFile] = {}
        keys: dict[str, disk.FileKey] = {}
        for item in live.values():
            path = item.split.path
            key = keys.get(path)
            if key is None:
                try:
                    st = os.stat(path)
                except OSError:
                    # Unlinked but still mapped: only what its mappers hold resident is known.
                    key = (-1, len(keys))
                    files[key] = _MemFile(None, False)
                else:
                    key = (st.st_dev, st.st_ino)
                    if key not in files:
                        files[key] = _MemFile(disk.allocated(st), self.filesystems.in_ram(path))
                keys[path] = key
            item.file_key = key
            entry = files[key]
            if item.split.guest_shared:
                entry.shared_mappers += 1
            else:
                entry.private_mappers += 1
            entry.max_file_bytes = max(entry.max_file_bytes, item.split.guest_file_kib * KIB)
        return files

    @staticmethod
    def _file_ram(entry: _MemFile) -> int:
        """Host RAM a memory file holds: all its pages on tmpfs; on a disk filesystem, only its
        page cache, of which the largest single mapper is the known lower bound."""
        if entry.in_ram and entry.allocated is not None:
            return entry.allocated
        return entry.max_file_bytes

    def _state_ram(self, live: dict[str, _Live]) -> int:
        """Host RAM the delta states of live sandboxes' templates hold (each counted once)."""
        held: dict[tuple[int, int], int] = {}
        for item in live.values():
            path = item.target.state_path
            if not path:
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue  # collected meanwhile: it holds nothing any more
            if self.filesystems.in_ram(path):
                held[(st.st_dev, st.st_ino)] = disk.allocated(st)
        return sum(held.values())

    @staticmethod
    def _owned(entry: _MemFile) -> bool:
        # A file one sandbox maps shared (a cold-booted sandbox) is its own memory, not a template.
        return entry.shared_mappers == 1 and entry.private_mappers == 0

    # per sandbox

    def _sandbox(
        self,
        t: Target,
        item: _Live | None,
        files: dict[disk.FileKey, _MemFile],
        chain: _Chain,
        now: float,
    ) -> SandboxSample:
        unique_disk = shared_disk = None
        if isinstance(chain, tuple):
            unique_disk = chain[0].allocated_bytes
            shared_disk = sum(layer.allocated_bytes for layer in chain[1])
        base = SandboxSample(
            id=t.id,
            name=t.name,
            phase=t.phase,
            sampled_at=now,
            unique_disk_bytes=unique_disk,
            shared_disk_bytes=shared_disk,
            template_id=t.template_id,
        )
        if item is None:
            return base
        rx, tx = net.traffic(t.net_device) if t.net_device else (None, None)
        assert item.file_key is not None
        entry = files[item.file_key]
        anon = item.split.guest_anon_kib * KIB
        if self._owned(entry):
            unique, shared = anon + self._file_ram(entry), 0
        else:
            unique, shared = anon, item.split.guest_file_kib * KIB
        return SandboxSample(
            id=t.id,
            name=t.name,
            phase=t.phase,
            sampled_at=now,
            unique_mem_bytes=unique,
            shared_mem_bytes=shared,
            vmm_overhead_bytes=item.split.vmm_kib * KIB,
            rss_bytes=item.status.rss_kib * KIB,
            unique_disk_bytes=unique_disk,
            shared_disk_bytes=shared_disk,
            cpu_percent=item.cpu_percent,
            guest_mem_used_bytes=t.guest_mem_used_bytes,
            template_id=t.template_id,
            net_rx_bytes=rx,
            net_tx_bytes=tx,
        )

    def _disk(self, t: Target) -> _Chain:
        if not t.disk_path or t.phase == "terminated":
            return None
        try:
            return self.chains.chain(t.disk_path)
        except FileNotFoundError as exc:
            # No overlay (yet, or any more) is no disk use; a missing backing layer is an error.
            return None if exc.filename == t.disk_path else exc
        except (OSError, ValueError) as exc:
            return exc

    # host

    def _host(
        self,
        now: float,
        samples: list[SandboxSample],
        live: dict[str, _Live],
        files: dict[disk.FileKey, _MemFile],
        broken: bool,
        disks: dict[str, _Chain],
    ) -> HostSample:
        by_id = {s.id: s for s in samples}
        naive: int | None = None
        cow: int | None = None
        naive_guest: int | None = None
        cow_guest: int | None = None
        templates: int | None = None
        if not broken:
            templates = sum(self._file_ram(f) for f in files.values() if not self._owned(f))
            templates += self._state_ram(live)
            naive = sum(item.status.rss_kib * KIB for item in live.values())
            unique = sum(by_id[i].unique_mem_bytes or 0 for i in live)
            vmm = sum(by_id[i].vmm_overhead_bytes or 0 for i in live)
            cow = unique + vmm + templates
            naive_guest = sum(item.split.guest_rss_kib * KIB for item in live.values())
            cow_guest = unique + templates
        naive_disk, cow_disk = _host_disk(disks)
        total: int | None = None
        available: int | None = None
        try:
            vm = psutil.virtual_memory()
            total, available = int(vm.total), int(vm.available)
        except OSError:
            pass
        return HostSample(
            sampled_at=now,
            sandboxes_running=len(live),
            naive_mem_bytes=naive,
            cow_aware_mem_bytes=cow,
            saved_mem_bytes=None if naive is None or cow is None else naive - cow,
            naive_guest_mem_bytes=naive_guest,
            cow_aware_guest_mem_bytes=cow_guest,
            template_mem_bytes=templates,
            naive_disk_bytes=naive_disk,
            cow_aware_disk_bytes=cow_disk,
            saved_disk_bytes=None
            if naive_disk is None or cow_disk is None
            else naive_disk - cow_disk,
            cpu_percent=self.cpu.host(),
            cpu_count=os.cpu_count(),
            mem_total_bytes=total,
            mem_available_bytes=available,
        )

    def _forget(self, targets: Sequence[Target], pids: frozenset[tuple[int, int]]) -> None:
        ids = {t.id for t in targets}
        for key in [k for k in self._splits if k not in ids]:
            del self._splits[key]
        for pid_key in [k for k in self._cmdline_paths if k not in pids]:
            del self._cmdline_paths[pid_key]
        self.cpu.forget(set(pids))


def _host_disk(disks: dict[str, _Chain]) -> tuple[int | None, int | None]:
    """(naive, CoW-aware): every chain in full per sandbox, vs every layer file once."""
    naive = 0
    once: dict[disk.FileKey, int] = {}
    for chain in disks.values():
        if chain is None:
            continue
        if isinstance(chain, Exception):
            return None, None
        top, layers = chain
        for layer in (top, *layers):
            naive += layer.allocated_bytes
            once[layer.key] = layer.allocated_bytes
    return naive, sum(once.values())


def mem_path_from_argv(argv: Sequence[str]) -> str | None:
    """mem-path= of QEMU's memory-backend-file object (QEMU doubles commas inside values)."""
    for arg in argv:
        if not arg.startswith("memory-backend-file"):
            continue
        for option in arg.replace(",,", "\0").split(","):
            key, _, value = option.partition("=")
            if key == "mem-path":
                return value.replace("\0", ",")
    return None
