"""Read a sandbox disk offline, with no VM booted: a qcow2 chain seen as raw ext4 by debugfs.

Why this design: debugfs (e2fsprogs) reads ext4 from a plain file without mounting it, so no
root, loop device or kernel ext4 driver is needed, and the guest's filesystem is never
interpreted by the host kernel. debugfs cannot read qcow2, so the chain is first exposed as one
raw image, in one of two ways:

* "fuse" (preferred): qemu-storage-daemon exports the chain read-only as a raw FUSE file. No
  copy is made: debugfs reads only the blocks it needs, so opening costs ~50 ms whatever the
  disk size (a 1 GiB chain with 4,800 files lists recursively in under a second here). It
  needs /dev/fuse and the right to mount (root, or fusermount3).
* "copy" (fallback, or GROVE_OFFLINE_DISK_FUSE=0): `qemu-img convert` flattens the chain into
  a sparse raw file. It needs nothing beyond qemu-img, but costs time and space in proportion
  to the data on the disk, on every open.

qemu-nbd is not used: it needs the nbd kernel module and a free /dev/nbdN (absent on many
hosts, containers included), and a raw NBD client would still need FUSE or a copy.

Every layer is opened read-only with shared locks (force-share, `qemu-img -U`), so a VM or
another reader is neither blocked nor modified (a VM writing the top layer meanwhile may give
a torn view, never a damaged disk; `export` refuses a result whose top layer changed under
it). debugfs runs in catastrophic mode (-c), which opens the filesystem read-only and does not
replay the journal: a disk whose VM was killed shows what had reached the disk.

Everything temporary (the mountpoint, a flattened copy, the daemon's log, dumped symlink
targets) lives in one private directory named disk-* under the engine's tmp directory, owned
by one OfflineDisk (or one export) and removed when it closes. Helpers are started with a
parent-death signal where setpriv exists, and `sweep_stale`, run at engine start-up, kills,
unmounts and removes whatever a crashed engine left there.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import functools
import json
import logging
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from engine.errors import GroveError, invalid

log = logging.getLogger(__name__)

#: Entries a recursive listing may return before it gives up.
MAX_ENTRIES = 100_000
MOUNT_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
#: Commands per debugfs run when listing or stat-ing many inodes: one process per batch, not
#: one per inode (a debian rootfs has thousands of directories).
BATCH = 2000
#: Symlinks a read follows before it gives up (Linux's limit).
MAX_SYMLINKS = 40
#: Set to 0 to never try the FUSE export (always flatten the chain into a temp file).
FUSE_ENV = "GROVE_OFFLINE_DISK_FUSE"
EXPORT_FORMATS = ("qcow2", "raw")
#: Every temporary directory of this module starts so: what `sweep_stale` removes.
DIR_PREFIX = "disk-"

# debugfs and mkfs live in sbin, which a non-login PATH may lack.
_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"

_TYPES = {"regular": "file", "directory": "directory", "symlink": "symlink"}
_S_IFMT = 0o170000
_S_IFDIR = 0o040000

# `stat` output: the first line, the size (on the User line; Fragment has a Size too), mtime
# (seconds, then the extra word of large inodes) and a fast symlink's target. Extended
# attributes print escaped or as a length, so only the fast link target is raw guest text.
_STAT_HEAD = re.compile(rb"Inode: (\d+)\s+Type: (.*?)\s+Mode:\s+([0-7]+)\s")
_STAT_SIZE = re.compile(rb"User:.*\sSize: (\d+)\s*$")
_STAT_MTIME = re.compile(rb"\s*mtime: 0x([0-9a-f]+)(?::([0-9a-f]+))?")
_FAST_LINK = b'Fast link dest: "'
# `ls -l -p` output: /inode/mode/uid/gid/name/size/ (names hold any byte but NUL and '/', so a
# record is parsed whole and a newline in a name cannot start a record of its own).
_LS_ENTRY = re.compile(rb"/(\d+)/([0-7]+)/-?\d+/-?\d+/([^/]*)/\d*/\n")
# With -f, debugfs echoes each command before its output.
_ECHO = re.compile(rb"debugfs: ([^\n]*)\n")
_ECHO_LS = re.compile(rb"ls -l -p <(\d+)>")
_BANNER = re.compile(r"^debugfs \d|catastrophic mode")
_OPEN_FAILED = ("while trying to open", "Filesystem not open", "Bad magic number")
_NOT_FOUND = ("File not found by ext2_lookup", "inode is not a directory")
_LOOP = "Too many symbolic links"
_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
_MOUNTINFO_ESCAPE = re.compile(rb"\\([0-7]{3})")

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class DiskEntry:
    path: str
    type: str  # "file" | "directory" | "symlink" | "other"
    size: int
    mode: int  # permission bits (including setuid, setgid, sticky)
    mtime: float  # unix seconds
    link_target: str = ""


@dataclass(frozen=True, slots=True)
class DiskRead:
    """A read: entry is the regular file read (a symlink's final target), its size the whole
    file's; data holds at most the bytes asked for."""

    entry: DiskEntry
    data: bytes
    truncated: bool


@dataclass(slots=True)
class _Inode:
    ino: int
    type: str
    mode: int
    size: int = 0
    mtime: float = 0.0
    target: bytes | None = None  # a symlink's target once known


def work_dir(tmp: Path) -> Path:
    """A new private directory tmp/disk-XXXXXXXX, the one place an open disk or an export
    keeps its temporary files; its owner removes it (and `sweep_stale` after a crash)."""
    tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=tmp.absolute()))
    if "\n" in str(path) or "\r" in str(path):
        # debugfs reads one command per line, and dump destinations live here.
        shutil.rmtree(path, ignore_errors=True)
        raise invalid(f"temporary directory {str(tmp)!r} has a line break", "use a plain path")
    return path


class OfflineDisk:
    """A read-only view of a qcow2 chain (top layer path given) as a raw ext4 image, for debugfs.

    Open with `OfflineDisk.open` (or `async with await OfflineDisk.open(...)`); `close` stops
    the export and removes every temp file. `via` says how the chain is seen: "fuse" or "copy".
    """

    def __init__(self, top: Path, tmp: Path, debugfs: str) -> None:
        self.top = top
        self.raw = tmp / "copy.raw"
        self.via = ""
        self.tmp = tmp
        self._debugfs = debugfs
        self._daemon: asyncio.subprocess.Process | None = None
        self._mountpoint: Path | None = None
        self._closed = False

    @classmethod
    async def open(cls, top: Path, tmp: Path, use_fuse: bool | None = None) -> OfflineDisk:
        """tmp: the engine's scratch directory; the disk makes its own tmp/disk-* in it.

        use_fuse: True requires the FUSE export, False always flattens the chain, None (the
        default) tries FUSE unless GROVE_OFFLINE_DISK_FUSE=0 and falls back to the copy.
        """
        debugfs = shutil.which("debugfs") or shutil.which("debugfs", path=_SBIN)
        if debugfs is None:
            raise GroveError(
                "debugfs_missing", "debugfs is not installed", "apt-get install e2fsprogs"
            )
        top = top.absolute()
        if not top.is_file():
            raise GroveError(
                "disk_not_found", f"no disk image at {top}", "check the sandbox still exists"
            )
        disk = cls(top, work_dir(tmp), debugfs)
        try:
            await disk._attach(use_fuse)
        except BaseException:
            await disk.close()
            raise
        return disk

    async def __aenter__(self) -> OfflineDisk:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the export and remove the mountpoint and temp files; safe to call twice."""
        self._closed = True
        try:
            await self._stop_daemon()
        finally:
            # Synchronous, so a cancelled close still leaves nothing behind.
            self._release()

    async def stat(self, path: str) -> DiskEntry:
        """The entry at path itself (a symlink is not followed, like lstat)."""
        path = _normalize(path)
        inode = await self._lookup(path)
        await self._resolve_targets([inode])
        return _entry(path, inode)

    async def list(
        self, path: str, recursive: bool = False, *, max_entries: int = MAX_ENTRIES
    ) -> builtins.list[DiskEntry]:
        """A directory's entries (recursive: its whole subtree) without . and .., by path; a
        file or symlink lists as itself."""
        path = _normalize(path)
        top = await self._lookup(path)
        if top.type != "directory":
            await self._resolve_targets([top])
            return [_entry(path, top)]
        found: builtins.list[tuple[str, int]] = []
        seen = {top.ino}  # a damaged filesystem may loop: never walk a directory twice
        level = [(path, top.ino)]
        while level:
            listings: dict[int, builtins.list[tuple[bytes, int, int]]] = {}
            for chunk in _chunks(level, BATCH):
                out = await self._batch([f"ls -l -p <{ino}>" for _, ino in chunk], "list")
                listings.update(_parse_listings(out))
            deeper: builtins.list[tuple[str, int]] = []
            for parent, dir_ino in level:
                if dir_ino not in listings:
                    raise _read_failed(f"debugfs did not list {parent}")
                for name, ino, mode in listings[dir_ino]:
                    # Inode 0: an unused slot (lost+found keeps empty blocks of them).
                    if ino == 0 or name in (b".", b".."):
                        continue
                    child = _join(parent, os.fsdecode(name))
                    found.append((child, ino))
                    if len(found) > max_entries:
                        raise GroveError(
                            "too_many_entries",
                            f"{path} holds more than {max_entries} entries",
                            "list a deeper directory, or without recursion",
                        )
                    if recursive and mode & _S_IFMT == _S_IFDIR and ino not in seen:
                        seen.add(ino)
                        deeper.append((child, ino))
            level = deeper
        inodes = await self._stat_inodes(sorted({ino for _, ino in found}))
        await self._resolve_targets(builtins.list(inodes.values()))
        return sorted((_entry(p, inodes[ino]) for p, ino in found), key=lambda e: e.path)

    async def read(self, path: str, max_bytes: int) -> DiskRead:
        """At most max_bytes of a regular file, exact bytes. Symlinks are followed inside the
        disk (an absolute target starts at the disk's root), as open() in the guest would."""
        if max_bytes < 0:
            raise invalid(f"max_bytes is negative ({max_bytes})", "pass 0 or more")
        path = asked = _normalize(path)
        inode = await self._lookup(path)
        hops = 0
        while inode.type == "symlink":
            if hops == MAX_SYMLINKS:
                raise _symlink_loop(asked)
            hops += 1
            await self._resolve_targets([inode])
            path = _link_path(path, inode.target or b"", asked)
            inode = await self._lookup(path, asked)
        if inode.type != "file":
            raise _not_a_file(asked, inode)
        want = min(inode.size, max_bytes)
        data = await self._cat(inode.ino, want, inode.size) if want else b""
        if len(data) < want:
            raise _read_failed(f"debugfs read {len(data)} of {want} bytes of {asked}")
        return DiskRead(_entry(path, inode), data, inode.size > max_bytes)

    # The chain as a raw image.

    async def _attach(self, use_fuse: bool | None) -> None:
        try_fuse = use_fuse
        if try_fuse is None:
            try_fuse = os.environ.get(FUSE_ENV, "1") != "0"
        if try_fuse:
            daemon = shutil.which("qemu-storage-daemon")
            try:
                if daemon is None or not os.path.exists("/dev/fuse"):
                    missing = "/dev/fuse is missing" if daemon else "no qemu-storage-daemon"
                    raise GroveError(
                        "fuse_unavailable",
                        f"cannot export the disk over FUSE: {missing}",
                        "apt-get install qemu-system-common, or open the disk without FUSE",
                    )
                await self._start_fuse(daemon)
                self.via = "fuse"
                return
            except GroveError as exc:
                if use_fuse:
                    raise
                # The copy is slower but needs nothing beyond qemu-img.
                log.info("offline disk %s: %s; flattening the chain instead", self.top, exc)
                await self._stop_daemon()
                self._release_mount()
        await _convert(self.top, "raw", self.raw, None, "disk_copy_failed")
        self.via = "copy"

    async def _start_fuse(self, daemon: str) -> None:
        mountpoint = self.tmp / "export.raw"
        mountpoint.touch(mode=0o600)  # a FUSE export mounts over an existing regular file
        self._mountpoint = mountpoint
        # JSON options: no QemuOpts comma escaping for paths. force-share: a running VM may
        # hold the top layer writable; it is inherited by the backing layers qcow2 opens.
        protocol = {"driver": "file", "node-name": "file", "filename": str(self.top)}
        fmt = {"driver": "qcow2", "node-name": "disk", "file": "file"}
        export = {
            "type": "fuse", "id": "disk", "node-name": "disk", "mountpoint": str(mountpoint),
            "writable": False, "allow-other": "off",
        }  # fmt: skip
        shared = {"read-only": True, "force-share": True}
        log_path = self.tmp / "daemon.log"
        with open(log_path, "wb") as log_file:
            # No QMP monitor and no --daemonize: the daemon stays a child process we own and
            # stop by its handle, and it takes the export down when terminated. SIGTERM if
            # the engine dies first: the daemon unmounts before it exits.
            self._daemon = await _spawn(
                [
                    daemon,
                    "--blockdev", json.dumps({**protocol, **shared}),
                    "--blockdev", json.dumps({**fmt, **shared}),
                    "--export", json.dumps(export),
                ],
                death=signal.SIGTERM, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
            )  # fmt: skip
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not _mounted(mountpoint):
            if self._daemon.returncode is not None:
                reason = log_path.read_text(errors="replace").strip().splitlines()
                raise GroveError(
                    "fuse_export_failed",
                    f"qemu-storage-daemon exited: {reason[-1] if reason else 'no message'}",
                    "check /dev/fuse is usable (FUSE mounts need root here)",
                )
            if time.monotonic() > deadline:
                raise GroveError(
                    "fuse_export_failed",
                    f"the FUSE export of {self.top} was not mounted within {MOUNT_TIMEOUT:g} s",
                    "check qemu-storage-daemon and /dev/fuse work on this host",
                )
            await asyncio.sleep(0.01)
        self.raw = mountpoint

    async def _stop_daemon(self) -> None:
        proc = self._daemon
        if proc is None:
            return
        if proc.returncode is None:
            # SIGTERM: the daemon unmounts its export before it exits.
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self._daemon = None

    def _release(self) -> None:
        proc = self._daemon
        if proc is not None and proc.returncode is None:
            # Only when close was interrupted: no time left to wait for a clean exit.
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        self._daemon = None
        self._release_mount()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _release_mount(self) -> None:
        mountpoint = self._mountpoint
        if mountpoint is None:
            return
        # A killed daemon leaves its (dead) FUSE mount behind: detach it.
        if _mounted(mountpoint) and not _detach(mountpoint):
            log.warning("offline disk: could not unmount %s", mountpoint)
            return
        mountpoint.unlink(missing_ok=True)
        self._mountpoint = None

    # debugfs.

    async def _run(self, args: Sequence[str], script: bytes | None = None) -> tuple[bytes, str]:
        """(stdout, errors): errors are stderr's lines beyond the banner, joined."""
        if self._closed:
            raise GroveError("disk_closed", "the offline disk is closed", "open it again")
        proc = await _spawn(
            [self._debugfs, "-c", *args, str(self.raw)],
            stdin=subprocess.PIPE if script is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await proc.communicate(script)
        finally:
            _kill(proc)
        lines = err.decode(errors="replace").splitlines()
        errors = "; ".join(ln.strip() for ln in lines if ln.strip() and not _BANNER.search(ln))
        if any(text in errors for text in _OPEN_FAILED):
            raise GroveError(
                "disk_unreadable",
                f"debugfs cannot open the disk as ext4: {errors}",
                "check the image holds a bare ext4 filesystem (no partition table)",
            )
        return out, errors

    async def _batch(self, commands: Sequence[str], what: str) -> bytes:
        out, errors = await self._run(["-f", "-"], "".join(f"{c}\n" for c in commands).encode())
        if errors:
            raise _read_failed(f"debugfs failed to {what}: {errors}")
        return out

    async def _lookup(self, path: str, asked: str = "") -> _Inode:
        """asked: the path the caller gave, when path is a symlink's target (for messages)."""
        out, errors = await self._run(["-R", f"stat {_quote(path)}"])
        if any(text in errors for text in _NOT_FOUND):
            raise GroveError(
                "file_not_found",
                f"no file or directory {path} on the disk"
                + (f" (the target of symlink {asked})" if asked and asked != path else ""),
                "check the path: list its parent directory to see what is there",
            )
        if _LOOP in errors:
            raise _symlink_loop(path)
        if errors:
            raise _read_failed(f"debugfs failed to stat {path}: {errors}")
        inodes = _parse_stats(out)
        if len(inodes) != 1:
            raise _read_failed(f"debugfs printed no inode for {path}")
        return next(iter(inodes.values()))

    async def _stat_inodes(self, inos: Sequence[int]) -> dict[int, _Inode]:
        inodes: dict[int, _Inode] = {}
        for chunk in _chunks(inos, BATCH):
            inodes.update(_parse_stats(await self._batch([f"stat <{i}>" for i in chunk], "stat")))
        missing = [i for i in inos if i not in inodes]
        if missing:
            raise _read_failed(f"debugfs printed no inode {missing[0]}")
        return inodes

    async def _resolve_targets(self, inodes: Sequence[_Inode]) -> None:
        """Fill in the targets of slow symlinks (60 bytes or more): stat prints only fast
        ones, the rest live in a data block, dumped to files (any byte is safe there)."""
        slow = [i for i in inodes if i.type == "symlink" and i.target is None]
        if not slow:
            return
        with tempfile.TemporaryDirectory(prefix="links-", dir=self.tmp) as links:
            dest = {i.ino: Path(links) / str(i.ino) for i in slow}
            for chunk in _chunks(slow, BATCH):
                commands = [f"dump <{i.ino}> {_quote(str(dest[i.ino]))}" for i in chunk]
                await self._batch(commands, "read symlinks")
            for inode in slow:
                inode.target = dest[inode.ino].read_bytes()

    async def _cat(self, ino: int, want: int, size: int) -> bytes:
        """The first want bytes of an inode: debugfs cat, stopped once enough is read."""
        if self._closed:
            raise GroveError("disk_closed", "the offline disk is closed", "open it again")
        proc = await _spawn(
            [self._debugfs, "-c", "-R", f"cat <{ino}>", str(self.raw)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        stderr = asyncio.ensure_future(proc.stderr.read())
        chunks: builtins.list[bytes] = []
        got = 0
        try:
            while got < want:
                chunk = await proc.stdout.read(min(want - got, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
            if want < size:
                _kill(proc)  # the rest is not wanted
            await _reap(proc)
            err = await stderr
        except BaseException:
            _kill(proc)
            stderr.cancel()
            raise
        if got < want:
            message = _one_line(err) or "no message"
            raise _read_failed(f"debugfs cat stopped early: {message}")
        return b"".join(chunks)


async def export(top: Path, fmt: str, out: Path, progress: Callable[[float], None]) -> None:
    """The whole chain flattened into one image at out (which must not exist), as qcow2 or
    raw; progress gets percentages, increasing, ending at 100.

    The image is written to a temporary name beside out and renamed into place once complete,
    so out never holds a partial image; a failed or cancelled export leaves nothing.
    """
    if fmt not in EXPORT_FORMATS:
        raise invalid(f"unknown disk format '{fmt}'", "use qcow2 or raw")
    top = top.absolute()
    if not top.is_file():
        raise GroveError("disk_not_found", f"no disk image at {top}", "check the sandbox exists")
    if out.exists() or out.is_symlink():
        raise _exists(out)
    temp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.part")
    try:
        # Claimed exclusively first: nothing else's file (or a symlink) is ever written through.
        os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    except OSError as exc:
        raise GroveError(
            "export_failed",
            f"cannot create a file in {out.parent}: {exc.strerror}",
            "check the directory exists and is writable",
        ) from None
    try:
        before = _fingerprint(top)
        await _convert(top, fmt, temp, progress, "export_failed")
        if _fingerprint(top) != before:
            # The only layer anything writes is the top: a VM started meanwhile.
            raise GroveError(
                "disk_changed",
                f"{top.name} changed while it was exported (was the sandbox started?)",
                "stop the sandbox and export again",
            )
        os.chmod(temp, 0o644)
        _rename_new(temp, out)
    finally:
        temp.unlink(missing_ok=True)


def sweep_stale(tmp: Path) -> list[str]:
    """Engine start-up: remove what a crashed engine left in tmp/disk-*: helper processes
    still working there are killed, FUSE mounts detached, then the directories removed.

    Call it before anything opens a disk (every disk-* directory is presumed abandoned);
    returns the names removed.
    """
    tmp = tmp.absolute()
    if not tmp.is_dir():
        return []
    prefix = os.fsencode(tmp / DIR_PREFIX)
    for pid in _helpers_in(prefix):
        log.info("offline disk: killing stale helper %d", pid)
        _kill_pid(pid)
    for mountpoint in _mounts_with(prefix):
        log.info("offline disk: unmounting stale export %s", mountpoint)
        if not _detach(mountpoint):
            log.warning("offline disk: could not unmount %s", mountpoint)
    removed = []
    for entry in sorted(tmp.glob(f"{DIR_PREFIX}*")):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        if not entry.exists() and not entry.is_symlink():
            removed.append(entry.name)
    if removed:
        log.info("offline disk: removed %d stale temp directories", len(removed))
    return removed


async def _convert(
    top: Path, fmt: str, out: Path, progress: Callable[[float], None] | None, error_code: str
) -> None:
    # -f qcow2: every layer Grove makes is qcow2, and a format is never guessed from guest
    # bytes. -U: share locks, so an image a VM holds can still be read (never written).
    args = ["convert", *(["-p"] if progress else []), "-U", "-f", "qcow2", "-O", fmt]
    try:
        proc = await _spawn(
            ["qemu-img", *args, str(top), str(out)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
    except FileNotFoundError:
        raise GroveError(
            "qemu_img_missing", "qemu-img is not installed", "apt-get install qemu-utils"
        ) from None
    assert proc.stdout is not None and proc.stderr is not None
    stderr = asyncio.ensure_future(proc.stderr.read())
    last = -1.0
    try:
        pending = b""
        while chunk := await proc.stdout.read(4096):
            # Progress lines end in \r (a terminal redraws them in place).
            *lines, pending = re.split(rb"[\r\n]", pending + chunk)
            for line in lines:
                match = _PROGRESS.search(line)
                if progress and match and float(match[1]) > last:
                    last = float(match[1])
                    progress(last)
        status = await proc.wait()
        err = await stderr
    except BaseException:
        _kill(proc)
        stderr.cancel()
        # Dead before the caller removes the partial output (it could recreate it otherwise);
        # bounded, as a cancelled caller must not hang on it.
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(_reap(proc), STOP_TIMEOUT)
        raise
    if status != 0:
        raise GroveError(
            error_code,
            f"qemu-img convert failed: {_one_line(err) or f'exit status {status}'}",
            f"check free disk space in {out.parent} and that every layer of the chain exists",
        )
    if progress and last < 100.0:
        progress(100.0)


async def _spawn(
    argv: Sequence[str], death: signal.Signals = signal.SIGKILL, **kwargs: Any
) -> asyncio.subprocess.Process:
    """A helper that gets `death` if the engine dies first (setpriv's parent-death signal,
    which follows the spawning thread: the event loop's), in the C locale (e2fsprogs is
    translated and its errors are matched by text) and with no pager."""
    setpriv = _setpriv()
    guard = [setpriv, "--pdeathsig", death.name.removeprefix("SIG")] if setpriv else []
    env = {**os.environ, "LC_ALL": "C", "LANGUAGE": "C", "DEBUGFS_PAGER": "__none__"}
    program = shutil.which(argv[0]) if "/" not in argv[0] else argv[0]
    if program is None:
        raise FileNotFoundError(errno.ENOENT, "not found", argv[0])
    return await asyncio.create_subprocess_exec(*guard, program, *argv[1:], env=env, **kwargs)


@functools.cache
def _setpriv() -> str | None:
    """setpriv, if it knows --pdeathsig (util-linux 2.33 and later)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found = subprocess.run([setpriv, "--help"], capture_output=True, timeout=5, check=False)
        if b"--pdeathsig" in found.stdout:
            return setpriv
    return None


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Wait for a (killed) helper; its stdout drained, as wait() returns only once every pipe
    has closed, which a reader paused on a full buffer never sees."""
    if proc.stdout is not None:
        while await proc.stdout.read(1 << 16):
            pass
    await proc.wait()


def _fingerprint(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _rename_new(temp: Path, out: Path) -> None:
    """temp renamed to out, which must still not exist: a hard link fails rather than
    replacing a file that appeared meanwhile; filesystems without links get a plain rename."""
    try:
        os.link(temp, out, follow_symlinks=False)
    except FileExistsError:
        raise _exists(out) from None
    except OSError:
        if out.exists() or out.is_symlink():
            raise _exists(out) from None
        os.rename(temp, out)
    else:
        temp.unlink()


def _exists(out: Path) -> GroveError:
    return GroveError(
        "already_exists", f"{out} already exists", "choose a new path or remove the file"
    )


def _one_line(err: bytes) -> str:
    lines = err.decode(errors="replace").splitlines()
    return "; ".join(ln.strip() for ln in lines if ln.strip())


def _normalize(path: str) -> str:
    """An absolute path without empty or '.' parts; '..' is left to debugfs (which resolves
    it, and symlinks in the middle of a path, inside the disk)."""
    if "\x00" in path:
        raise invalid("path has a NUL byte", "pass a plain absolute path")
    if "\n" in path or "\r" in path:
        # debugfs reads one command per line.
        raise invalid("path has a line break", "paths with line breaks cannot be read offline")
    if not path.startswith("/"):
        raise invalid(f"path '{path}' is not absolute", "pass paths like /etc or /root")
    return "/" + "/".join(p for p in path.split("/") if p not in ("", "."))


def _link_path(path: str, target: bytes, asked: str) -> str:
    """Where the symlink at path points, as a disk path: relative targets start in the
    link's directory (the '..' in them is left to debugfs, which knows the real parents)."""
    text = os.fsdecode(target)
    if not text or "\x00" in text or "\n" in text or "\r" in text:
        raise GroveError(
            "file_not_found",
            f"{asked} is a symlink to {text!r}, which cannot be followed offline",
            "list the symlink to see its target",
        )
    if not text.startswith("/"):
        text = _join(path.rsplit("/", 1)[0] or "/", text)
    return _normalize(text)


def _quote(path: str) -> str:
    # debugfs's command parser: a double-quoted word, with "" for a literal quote.
    return '"' + path.replace('"', '""') + '"'


def _join(parent: str, name: str) -> str:
    return f"{parent.rstrip('/')}/{name}"


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _entry(path: str, inode: _Inode) -> DiskEntry:
    target = os.fsdecode(inode.target) if inode.target is not None else ""
    return DiskEntry(path, inode.type, inode.size, inode.mode, inode.mtime, target)


def _not_a_file(path: str, inode: _Inode) -> GroveError:
    if inode.type == "directory":
        return GroveError("not_a_file", f"{path} is a directory", "list it instead")
    return GroveError(
        "not_a_file",
        f"{path} is not a regular file (a device, FIFO or socket)",
        "read a regular file",
    )


def _symlink_loop(path: str) -> GroveError:
    return GroveError(
        "symlink_loop",
        f"too many levels of symbolic links resolving {path}",
        "list the symlinks on the path to see where they point",
    )


def _read_failed(message: str) -> GroveError:
    return GroveError("disk_read_failed", message, "check the disk with e2fsck -n (read-only)")


def _parse_stats(out: bytes) -> dict[int, _Inode]:
    """The inodes in a run of debugfs `stat` output, by number.

    A fast symlink's target is the only raw text (any byte but NUL, line breaks included): it
    is taken by its length (the Size field), so a target cannot fake lines of its own.
    """
    inodes: dict[int, _Inode] = {}
    current: _Inode | None = None
    pos = 0
    while pos < len(out):
        start = pos
        end = out.find(b"\n", start)
        end = len(out) if end < 0 else end
        line = out[start:end]
        pos = end + 1
        if head := _STAT_HEAD.match(line):
            kind = _TYPES.get(head[2].decode(errors="replace"), "other")
            current = _Inode(int(head[1]), kind, int(head[3], 8))
            inodes[current.ino] = current
        elif current is None:
            continue
        elif size := _STAT_SIZE.match(line):
            current.size = int(size[1])
        elif mtime := _STAT_MTIME.match(line):
            current.mtime = _ext4_time(int(mtime[1], 16), int(mtime[2] or b"0", 16))
        elif line.startswith(_FAST_LINK):
            first = start + len(_FAST_LINK)
            stop = first + current.size
            if out[stop : stop + 1] != b'"':  # not the length Size says: take the line
                stop = end - 1 if line.endswith(b'"') else end
            current.target = out[first:stop]
            after = out.find(b"\n", stop)
            pos = len(out) if after < 0 else after + 1
    return inodes


def _ext4_time(seconds: int, extra: int) -> float:
    """An ext4 timestamp: signed 32-bit seconds, plus (large inodes) an extra word holding two
    epoch bits (seconds beyond 2038) and the nanoseconds."""
    if seconds >= 1 << 31:
        seconds -= 1 << 32
    seconds += (extra & 3) << 32
    return seconds + (extra >> 2) / 1e9


def _parse_listings(out: bytes) -> dict[int, list[tuple[bytes, int, int]]]:
    """(name, inode, mode) of each directory in a run of `ls -l -p <ino>`, by directory inode."""
    listings: dict[int, list[tuple[bytes, int, int]]] = {}
    current: list[tuple[bytes, int, int]] | None = None
    pos = 0
    while pos < len(out):
        if out[pos : pos + 1] == b"\n":
            pos += 1
            continue
        if echo := _ECHO.match(out, pos):
            command = _ECHO_LS.fullmatch(echo[1])
            if command is None:
                raise _read_failed(f"unexpected debugfs output: {echo[0]!r}")
            current = listings.setdefault(int(command[1]), [])
            pos = echo.end()
            continue
        record = _LS_ENTRY.match(out, pos)
        if record is None or current is None:
            raise _read_failed(f"unexpected debugfs output: {out[pos : pos + 80]!r}")
        current.append((record[3], int(record[1]), int(record[2], 8)))
        pos = record.end()
    return listings


# Mounts and processes.


def _mountpoints() -> Iterator[bytes]:
    """Every mount point in this process's mount namespace, unescaped."""
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split(b" ")
            if len(fields) > 4:
                yield _MOUNTINFO_ESCAPE.sub(lambda m: bytes([int(m[1], 8)]), fields[4])


def _mounted(mountpoint: Path) -> bool:
    want = os.fsencode(mountpoint)
    return any(point == want for point in _mountpoints())


def _mounts_with(prefix: bytes) -> list[Path]:
    # Deepest first, should anything ever be mounted inside another export's directory.
    found = {os.fsdecode(p) for p in _mountpoints() if p.startswith(prefix)}
    return [Path(p) for p in sorted(found, key=len, reverse=True)]


def _detach(mountpoint: Path) -> bool:
    """Lazily unmount (a dead FUSE daemon's mount answers nothing, a plain umount hangs on
    nothing but may fail as busy); fusermount where an unprivileged engine mounted it."""
    for argv in (
        ["umount", "-l", str(mountpoint)],
        ["fusermount3", "-u", "-z", str(mountpoint)],
        ["fusermount", "-u", "-z", str(mountpoint)],
    ):
        if not _mounted(mountpoint):
            break
        program = shutil.which(argv[0]) or shutil.which(argv[0], path=_SBIN)
        if program is None:
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([program, *argv[1:]], capture_output=True, timeout=10, check=False)
    return not _mounted(mountpoint)


def _helpers_in(prefix: bytes) -> list[int]:
    """Processes of this user with an argument naming a path under prefix: only this module's
    helpers are ever given such paths (the daemon's inside a JSON option, hence `in`)."""
    found = []
    uid = os.getuid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if proc.stat().st_uid != uid:
                continue
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if any(prefix in arg for arg in argv):
            found.append(int(proc.name))
    return found


def _kill_pid(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGKILL through a pidfd (immune to pid reuse), then wait until it has exited (it is not
    our child: its own parent, or init, reaps it)."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return  # already gone
    try:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        # A pidfd turns readable once its process has exited.
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.poll(timeout * 1000)
    finally:
        os.close(fd)
