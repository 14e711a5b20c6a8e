"""Where a pull lands on this machine: a file, an unpacked tree, or the tar itself.

Every sink writes to a temporary name beside its destination and moves it into place only
after each file's sha256 matched the guest's: an interrupted or corrupted pull leaves nothing
but what was there before. The host writes only under the destination the user named: tar
members are unpacked by ``guest.tarstream`` (no absolute or '..' names, never through a
symlink).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from engine.errors import GroveError
from guest.tarstream import Member, TarError, TarExtractor, TarReader


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...
    def finish(self, hashes: Mapping[str, str]) -> int: ...  # files kept
    def abort(self) -> None: ...


def _temp_beside(dest: Path, what: str) -> Path:
    return dest.parent / f".{dest.name}.grove-{what}-{secrets.token_hex(4)}"


def _mismatch(path: str) -> GroveError:
    return GroveError(
        "transfer_corrupt",
        f"sha256 mismatch for {path or 'the file'}; nothing was written",
        "retry the pull",
    )


def destination(output: Path, guest_path: str, kind: str, force: bool) -> Path:
    """Where a pull of guest_path (a file or a directory) goes, checked before any byte comes.

    A file into an existing directory keeps its name (like cp); an existing file is replaced
    only with force; an unpacked tree needs a new path (or an empty directory) unless force,
    which merges into it.
    """
    name = guest_path.rstrip("/").rsplit("/", 1)[-1] or "root"
    if kind == "file" and output.is_dir():
        output = output / name
    if not output.parent.is_dir():
        raise GroveError(
            "local_not_found",
            f"local directory '{output.parent}' does not exist",
            "create it first, or pick another -o",
        )
    exists = output.exists() or output.is_symlink()
    if exists and not force:
        if kind == "directory" and output.is_dir() and not any(output.iterdir()):
            return output
        raise GroveError(
            "local_exists",
            f"'{output}' already exists; nothing was pulled",
            "remove it, choose another -o, or pass --force to replace (merge for a tree)",
        )
    if exists and kind == "directory" and not output.is_dir():
        raise GroveError(
            "local_not_a_directory",
            f"'{output}' exists and is not a directory",
            "choose another -o",
        )
    return output


class FileSink:
    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.temp = _temp_beside(dest, "pull")
        self._file = open(self.temp, "xb")  # noqa: SIM115 - closed in finish/abort
        self._digest = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._digest.update(data)
        self.bytes += len(data)

    def finish(self, hashes: Mapping[str, str]) -> int:
        self._file.close()
        if hashes.get("") != self._digest.hexdigest():
            self.abort()
            raise _mismatch(str(self.dest))
        os.replace(self.temp, self.dest)
        return 1

    def abort(self) -> None:
        self._file.close()
        with contextlib.suppress(OSError):
            self.temp.unlink()


class TreeSink:
    def __init__(self, dest: Path, merge: bool) -> None:
        self.dest = dest
        self.merge = merge
        self.bytes = 0
        self._extractor: TarExtractor | None = TarExtractor(str(_temp_beside(dest, "pull")))

    def write(self, data: bytes) -> None:
        assert self._extractor is not None
        self.bytes += len(data)
        try:
            self._extractor.feed(data)
        except TarError as exc:
            self.abort()
            raise _tar_error(exc, self.dest) from None

    def finish(self, hashes: Mapping[str, str]) -> int:
        assert self._extractor is not None
        try:
            writer = self._extractor.finish()
            writer.verify(hashes)
            # An empty directory made by destination() may stand where the tree goes.
            if not self.merge and self.dest.is_dir():
                self.dest.rmdir()
            writer.commit(str(self.dest), merge=self.merge)
        except TarError as exc:
            self.abort()
            if exc.code == "checksum_mismatch":
                raise _mismatch(exc.message) from None
            raise _tar_error(exc, self.dest) from None
        self._extractor = None
        return writer.files

    def abort(self) -> None:
        if self._extractor is not None:
            self._extractor.abort()
            self._extractor = None


class TarSink:
    """Keeps the tar as it came, and still checks every member's sha256 on the way."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.temp = _temp_beside(dest, "pull")
        self._file = open(self.temp, "xb")  # noqa: SIM115 - closed in finish/abort
        self._reader = TarReader()
        self._current: Member | None = None
        self._digest = hashlib.sha256()
        self._hashes: dict[str, str] = {}
        self.bytes = 0

    def _end_member(self) -> None:
        if self._current is not None and self._current.type == "file":
            self._hashes[self._current.path] = self._digest.hexdigest()
        self._current = None

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self.bytes += len(data)
        try:
            events = self._reader.feed(data)
        except TarError as exc:
            self.abort()
            raise _tar_error(exc, self.dest) from None
        for event in events:
            if isinstance(event, Member):
                self._end_member()
                self._current = event
                self._digest = hashlib.sha256()
            elif isinstance(event, bytes):
                self._digest.update(event)
            else:
                self._end_member()

    def finish(self, hashes: Mapping[str, str]) -> int:
        self._file.close()
        try:
            self._reader.close()
        except TarError as exc:
            self.abort()
            raise _tar_error(exc, self.dest) from None
        self._end_member()
        if dict(hashes) != self._hashes:
            bad = sorted(set(hashes.items()) ^ set(self._hashes.items()))
            self.abort()
            raise _mismatch(bad[0][0] if bad else "")
        os.replace(self.temp, self.dest)
        return len(self._hashes)

    def abort(self) -> None:
        self._file.close()
        with contextlib.suppress(OSError):
            self.temp.unlink()


def _tar_error(exc: TarError, dest: Path) -> GroveError:
    return GroveError(exc.code, f"pulling into {dest}: {exc.message}", "retry the pull")
