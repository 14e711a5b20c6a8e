"""What a push sends: a local file, directory or tar, with excludes and .gitignore applied.

Planning happens before anything is sent, so a missing source, an unsafe tar member or a tree
over the limit fails with a cause before the first byte. The stream itself is a tar made by
``guest.tarstream`` (the guest unpacks it with the same codec) and hashes every file it reads.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from engine.errors import GroveError
from guest.tarstream import (
    END_OF_ARCHIVE,
    Finished,
    Member,
    TarError,
    TarReader,
    TreePacker,
    encode_header,
    padding,
    walk,
)

READ_CHUNK = 256 * 1024


class Packer(Protocol):
    hashes: dict[str, str]

    def read(self, size: int) -> bytes: ...


@dataclass
class PushPlan:
    source: Path
    format: str  # file | tar
    total_bytes: int
    files: int
    mode: int = 0o644
    members: list[Member] = field(default_factory=list)
    excluded: int = 0
    #: Something the user should know (e.g. .gitignore could not be applied).
    note: str = ""

    def packer(self) -> Packer:
        if self.format == "file":
            return FilePacker(self.source)
        if self.source.is_dir():
            return TreePacker(str(self.source), self.members)
        return TarRepacker(self.source)


def tar_error(exc: TarError, source: Path) -> GroveError:
    return GroveError(exc.code, f"{source}: {exc.message}", "check the local source and retry")


def source_stat(source: Path) -> os.stat_result:
    """What a push source is (a symlink named on the command line is followed), or
    local_not_found; the CLI calls it before it dials the engine."""
    try:
        return source.lstat() if not source.is_symlink() else source.stat()
    except OSError:
        raise GroveError(
            "local_not_found",
            f"local source '{source}' does not exist",
            "pass an existing file, directory or .tar",
        ) from None


def plan(
    source: Path, exclude: Sequence[str] = (), ignore: bool = True, limit: int | None = None
) -> PushPlan:
    """limit: the engine's max_push_bytes (checked here, before anything is sent)."""
    st = source_stat(source)
    if stat.S_ISDIR(st.st_mode):
        found = _plan_tree(source, exclude, ignore)
    elif stat.S_ISREG(st.st_mode) and _is_tar(source):
        found = _plan_tar(source)
    elif stat.S_ISREG(st.st_mode):
        found = PushPlan(source, "file", st.st_size, 1, stat.S_IMODE(st.st_mode))
    else:
        raise GroveError(
            "local_not_a_file",
            f"local source '{source}' is not a file, directory or tar",
            "pass a regular file, a directory or a .tar",
        )
    if limit is not None and found.total_bytes > limit:
        raise GroveError(
            "push_too_large",
            f"{source} holds {found.total_bytes / 2**20:.1f} MiB, over the engine's "
            f"{limit / 2**20:.0f} MiB push limit; nothing was sent",
            "push less (--exclude PATTERN), or raise the engine's GROVE_PUSH_LIMIT",
        )
    return found


def _is_tar(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".tar", ".tar.gz", ".tgz"))


def excluder(patterns: Sequence[str]) -> Callable[[str], bool]:
    """A pattern with no '/' matches any path component's name (like rsync); one with '/'
    matches the path relative to the source root (and everything under it)."""

    def excluded(rel: str) -> bool:
        parts = rel.split("/")
        for pattern in patterns:
            pattern = pattern.strip("/")
            if "/" not in pattern:
                if any(fnmatch.fnmatchcase(part, pattern) for part in parts):
                    return True
            elif fnmatch.fnmatchcase(rel, pattern) or rel.startswith(pattern + "/"):
                return True
        return False

    return excluded


def _plan_tree(root: Path, exclude: Sequence[str], ignore: bool) -> PushPlan:
    skip = excluder(exclude)
    note = ""
    allowed: set[str] | None = None
    if ignore and _in_git_tree(root):
        allowed = _git_files(root)
        if allowed is None:
            note = "git is not installed: .gitignore was not applied"
    dirs: set[str] = set()
    if allowed is not None:
        dirs = {"/".join(p.split("/")[:i]) for p in allowed for i in range(1, p.count("/") + 1)}
    left_out = 0

    def excluded(rel: str) -> bool:
        # Pruned while walking: an excluded or ignored directory (node_modules, .git) is
        # never read, and counts once.
        nonlocal left_out
        out = skip(rel) or (allowed is not None and rel not in dirs and rel not in allowed)
        left_out += out
        return out

    try:
        kept = walk(str(root), excluded)
    except TarError as exc:
        raise tar_error(exc, root) from None
    files = [m for m in kept if m.type == "file"]
    root_mode = stat.S_IMODE(root.stat().st_mode)
    members = [Member(path="", type="directory", mode=root_mode), *kept]
    return PushPlan(
        source=root,
        format="tar",
        total_bytes=sum(m.size for m in files),
        files=len(files),
        members=members,
        excluded=left_out,
        note=note,
    )


def _in_git_tree(root: Path) -> bool:
    return any((p / ".git").exists() for p in (root, *root.resolve().parents))


def _git_files(root: Path) -> set[str] | None:
    """Tracked and untracked-but-not-ignored files, as git sees them (None: no git)."""
    git = shutil.which("git")
    if git is None:
        return None
    command = [git, "-C", str(root), "ls-files", "-z", "--cached", "--others"]
    result = subprocess.run(
        [*command, "--exclude-standard"], capture_output=True, check=False, timeout=60
    )
    if result.returncode != 0:
        return None
    return {p for p in result.stdout.decode("utf-8", "surrogateescape").split("\0") if p}


def _open_tar(path: Path) -> IO[bytes] | gzip.GzipFile:
    if path.name.lower().endswith((".gz", ".tgz")):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _tar_events(path: Path) -> Iterator[Member | bytes | Finished]:
    reader = TarReader()
    with _open_tar(path) as f:
        while chunk := f.read(READ_CHUNK):
            yield from reader.feed(chunk)
    reader.close()


def _plan_tar(path: Path) -> PushPlan:
    total = files = 0
    try:
        for event in _tar_events(path):
            if isinstance(event, Member) and event.type == "file":
                total += event.size
                files += 1
    except TarError as exc:
        raise tar_error(exc, path) from None
    except (OSError, EOFError) as exc:
        raise GroveError(
            "bad_archive", f"{path}: {exc}", "pass an uncompressed or gzip tar"
        ) from None
    return PushPlan(path, "tar", total, files)


class FilePacker:
    """One file's bytes, hashed as they are read (the hash's key is "")."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed at EOF or by close()
        self._digest = hashlib.sha256()
        self.hashes: dict[str, str] = {}

    def read(self, size: int) -> bytes:
        if self._file.closed:
            return b""
        data = self._file.read(size)
        if data:
            self._digest.update(data)
        else:
            self._file.close()
            self.hashes[""] = self._digest.hexdigest()
        return data

    def close(self) -> None:
        self._file.close()


class TarRepacker:
    """A local tar re-encoded member by member: names are checked, every file is hashed, and
    what reaches the guest is exactly what the guest's reader accepts."""

    def __init__(self, path: Path) -> None:
        self._events = _tar_events(path)
        self._pending = bytearray()
        self._current: Member | None = None
        self._digest = hashlib.sha256()
        self.hashes: dict[str, str] = {}
        self._done = False

    def _end_member(self) -> None:
        member = self._current
        if member is not None:
            if member.type == "file":
                self.hashes[member.path] = self._digest.hexdigest()
                self._pending += padding(member.size)
            self._current = None

    def read(self, size: int) -> bytes:
        while len(self._pending) < size and not self._done:
            event = next(self._events, None)
            if event is None or isinstance(event, Finished):
                self._end_member()
                self._pending += END_OF_ARCHIVE
                self._done = True
            elif isinstance(event, Member):
                self._end_member()
                self._current = event
                self._digest = hashlib.sha256()
                self._pending += encode_header(event)
            else:
                self._digest.update(event)
                self._pending += event
        data = bytes(self._pending[:size])
        del self._pending[:size]
        return data
