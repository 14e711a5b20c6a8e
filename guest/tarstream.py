"""A streaming tar codec shared by the guest agent and the host client.

Both ends of a push or pull speak tar (ustar, with PAX records for long or non-ASCII names and
huge sizes), so a user's own ``.tar`` goes through unchanged in meaning and a pull can be kept
as a tar. Only files, directories and symlinks cross: hard links, devices and fifos are refused
with a cause rather than approximated.

Unpacking is safe by construction, wherever it runs: names are relative (no absolute path, no
``..``), a member's parent must be a directory this extractor made itself (so nothing is ever
written through a symlink, not even one the same archive just created), files are created with
``O_EXCL | O_NOFOLLOW``, and everything lands in a private staging directory that moves into
place only when ``TreeWriter.commit`` runs after every file's sha256 was checked.

Standard library only: this module is part of the guest payload.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
#: PAX and GNU long-name payloads are buffered whole; past this the archive is refused.
MAX_META = 1 << 20
#: The largest size a plain ustar size field holds (11 octal digits).
USTAR_MAX_SIZE = 8**11 - 1
#: Read size for files while packing.
READ_CHUNK = 256 * 1024


class TarError(Exception):
    """A tar that cannot be read, written or unpacked safely; code is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Member:
    """One entry: path is relative with '/' separators, "" for the root of the tree."""

    path: str
    type: str  # file | directory | symlink
    size: int = 0
    mode: int = 0o644
    mtime: float = 0.0
    link_target: str = ""


class Finished:
    """The end-of-archive marker was read: nothing after it is data."""


def safe_relpath(name: str) -> str:
    """The member name as a clean relative path, or TarError(unsafe_path)."""
    if "\0" in name:
        raise TarError("unsafe_path", f"{name!r}: NUL in a member name")
    if name.startswith("/"):
        raise TarError("unsafe_path", f"{name}: absolute member names are refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise TarError("unsafe_path", f"{name}: '..' in a member name is refused")
    return "/".join(parts)


def padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


# --- writing ---------------------------------------------------------------------------------

_TYPEFLAGS = {"file": b"0", "directory": b"5", "symlink": b"2"}


def _octal(value: int, width: int) -> bytes:
    """width bytes: octal digits then NUL."""
    return b"%0*o\0" % (width - 1, value)


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode("utf-8", "surrogateescape")
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return str(length).encode() + body


def _fits(text: str, width: int) -> bool:
    return text.isascii() and len(text) <= width


def _header(name: bytes, flag: bytes, size: int, mode: int, mtime: int, link: bytes) -> bytes:
    size_field = _octal(size, 12) if size <= USTAR_MAX_SIZE else b"\x80" + size.to_bytes(11, "big")
    block = bytearray(BLOCK)
    block[0:100] = name[:100].ljust(100, b"\0")
    block[100:108] = _octal(mode & 0o7777, 8)
    block[108:116] = _octal(0, 8)
    block[116:124] = _octal(0, 8)
    block[124:136] = size_field
    block[136:148] = _octal(max(0, min(mtime, 8**11 - 1)), 12)
    block[148:156] = b" " * 8
    block[156:157] = flag
    block[157:257] = link[:100].ljust(100, b"\0")
    block[257:265] = b"ustar\x0000"
    block[265:269] = b"root"
    block[297:301] = b"root"
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def encode_header(member: Member) -> bytes:
    """The header block(s) for member: a PAX record first when ustar cannot hold it."""
    if member.type not in _TYPEFLAGS:
        raise TarError("unsupported_member", f"{member.path}: cannot encode a {member.type}")
    name = "./" if member.path == "" else member.path
    if member.type == "directory" and not name.endswith("/"):
        name += "/"
    size = member.size if member.type == "file" else 0
    records = b""
    if not _fits(name, 100):
        records += _pax_record("path", name)
    if member.link_target and not _fits(member.link_target, 100):
        records += _pax_record("linkpath", member.link_target)
    if size > USTAR_MAX_SIZE:
        records += _pax_record("size", str(size))
    mtime = int(member.mtime)
    out = b""
    if records:
        out = _header(b"././@PaxHeader", b"x", len(records), 0o644, mtime, b"")
        out += records + padding(len(records))
    raw_name = name.encode("utf-8", "surrogateescape")
    raw_link = member.link_target.encode("utf-8", "surrogateescape")
    return out + _header(raw_name, _TYPEFLAGS[member.type], size, member.mode, mtime, raw_link)


# --- reading ---------------------------------------------------------------------------------


def _number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256
        if field[0] == 0xFF:
            raise TarError("bad_archive", "negative number in a tar header")
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarError("bad_archive", f"bad number {text!r} in a tar header") from None


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _checksum_ok(block: bytes) -> bool:
    stored = _number(block[148:156])
    blank = block[:148] + b" " * 8 + block[156:]
    unsigned = sum(blank)
    signed = sum(b - 256 if b > 127 else b for b in blank)
    return stored in (unsigned, signed)


def _parse_pax(payload: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(payload):
        space = payload.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(payload[pos:space])
        except ValueError:
            raise TarError("bad_archive", "bad PAX record length") from None
        if length <= 0:
            raise TarError("bad_archive", "bad PAX record length")
        record = payload[space + 1 : pos + length]
        if not record.endswith(b"\n") or b"=" not in record:
            raise TarError("bad_archive", "bad PAX record")
        key, value = record[:-1].split(b"=", 1)
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


_UNSUPPORTED = {
    b"1": "hard link",
    b"3": "character device",
    b"4": "block device",
    b"6": "fifo",
    b"S": "sparse file",
}


class TarReader:
    """Push-style reader: feed() returns the Members, file data and Finished found so far."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._data_left = 0  # file bytes still to come for the current member
        self._skip_left = 0  # padding or ignored payload still to come
        self._meta_kind = b""  # x, g, L or K payload being gathered
        self._meta_left = 0
        self._meta = bytearray()
        self._pax: dict[str, str] = {}
        self._long_name: str | None = None
        self._long_link: str | None = None
        self._zero_blocks = 0
        self.finished = False

    def feed(self, chunk: bytes) -> list[Member | bytes | Finished]:
        events: list[Member | bytes | Finished] = []
        if self.finished:
            return events
        self._buf += chunk
        pos = 0
        buf = self._buf
        while pos < len(buf):
            if self._data_left:
                take = min(self._data_left, len(buf) - pos)
                events.append(bytes(buf[pos : pos + take]))
                pos += take
                self._data_left -= take
                continue
            if self._meta_left:
                take = min(self._meta_left, len(buf) - pos)
                self._meta += buf[pos : pos + take]
                pos += take
                self._meta_left -= take
                if not self._meta_left:
                    self._end_meta()
                continue
            if self._skip_left:
                take = min(self._skip_left, len(buf) - pos)
                pos += take
                self._skip_left -= take
                continue
            if len(buf) - pos < BLOCK:
                break
            block = bytes(buf[pos : pos + BLOCK])
            pos += BLOCK
            member = self._header(block)
            if self.finished:
                events.append(Finished())
                break
            if member is not None:
                events.append(member)
        del self._buf[:pos]
        if self.finished:
            self._buf.clear()
        return events

    def _end_meta(self) -> None:
        kind, payload = self._meta_kind, bytes(self._meta)
        self._meta = bytearray()
        self._meta_kind = b""
        if kind == b"x":
            self._pax.update(_parse_pax(payload))
        elif kind == b"L":
            self._long_name = payload.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif kind == b"K":
            self._long_link = payload.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        # 'g' (global PAX) carries defaults this codec never needs: read and dropped.

    def _header(self, block: bytes) -> Member | None:
        if block == b"\0" * BLOCK:
            self._zero_blocks += 1
            if self._zero_blocks == 2:
                self.finished = True
            return None
        if self._zero_blocks:
            raise TarError("bad_archive", "a lone zero block inside the archive")
        if not _checksum_ok(block):
            raise TarError("bad_archive", "tar header checksum mismatch (not a tar, or damaged)")
        flag = block[156:157]
        size = _number(block[124:136])
        if flag in (b"x", b"g", b"L", b"K"):
            if size > MAX_META:
                raise TarError("bad_archive", "oversized PAX or long-name record")
            self._meta_kind = flag
            self._meta_left = size
            self._skip_left = len(padding(size))
            if size == 0:
                self._end_meta()
            return None
        name = _text(block[0:100])
        # Only POSIX ustar has a name prefix there (old GNU keeps times in those bytes).
        prefix = _text(block[345:500]) if block[257:263] == b"ustar\0" else ""
        if prefix:
            name = f"{prefix}/{name}"
        link = _text(block[157:257])
        pax, self._pax = self._pax, {}
        long_name, self._long_name = self._long_name, None
        long_link, self._long_link = self._long_link, None
        name = pax.get("path", long_name if long_name is not None else name)
        link = pax.get("linkpath", long_link if long_link is not None else link)
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError:
                raise TarError("bad_archive", "bad PAX size") from None
        try:
            mtime = float(pax.get("mtime", _number(block[136:148])))
        except ValueError:
            mtime = 0.0
        mode = _number(block[100:108]) & 0o7777
        if flag in _UNSUPPORTED:
            raise TarError("unsupported_member", f"{name}: a {_UNSUPPORTED[flag]} is not supported")
        if flag in (b"0", b"\0", b"7"):
            kind = "directory" if name.endswith("/") else "file"
        elif flag in (b"5", b"D"):
            kind = "directory"
        elif flag == b"2":
            kind = "symlink"
        elif flag == b"V":  # a volume label names nothing on disk
            self._skip_left = size + len(padding(size))
            return None
        else:
            raise TarError("unsupported_member", f"{name}: tar member type {flag!r} not supported")
        path = safe_relpath(name)
        if kind == "file":
            self._data_left = size
            self._skip_left = len(padding(size))
        else:
            self._skip_left = size + len(padding(size))
            size = 0
        if path == "" and kind != "directory":
            raise TarError("unsafe_path", f"{name}: the archive root must be a directory")
        return Member(path, kind, size, mode, mtime, link if kind == "symlink" else "")

    def close(self) -> None:
        """The stream ended: fine at a member boundary, TarError(truncated) inside one."""
        if self.finished:
            return
        if self._data_left or self._meta_left or self._skip_left or self._buf:
            raise TarError("truncated", "the tar stream ended inside a member")
        if self._zero_blocks:  # one zero block then EOF: short, but unambiguous
            self.finished = True


# --- unpacking -------------------------------------------------------------------------------


def _os_tar_error(exc: OSError, what: str) -> TarError:
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return TarError("no_space", f"{what}: no space left on the device")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return TarError("permission_denied", f"{what}: {exc.strerror}")
    return TarError("io_error", f"{what}: {exc.strerror or exc}")


def _remove_tree(path: str) -> None:
    """rmtree that also clears directories made read-only by a member's mode."""

    def retry(func: Callable[..., object], target: str, _exc: object) -> None:
        try:
            os.chmod(os.path.dirname(target), 0o700)
            if os.path.isdir(target) and not os.path.islink(target):
                os.chmod(target, 0o700)
                shutil.rmtree(target, ignore_errors=True)
            else:
                func(target)
        except OSError:
            pass

    if os.path.lexists(path):
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
            return
        os.chmod(path, 0o700)
        shutil.rmtree(path, onerror=retry)


class TarExtractor:
    """Unpacks a tar stream into a fresh private staging directory."""

    def __init__(self, staging: str) -> None:
        self.staging = staging
        try:
            if os.path.lexists(staging):
                _remove_tree(staging)  # a stale one from a transfer that died
            os.mkdir(staging, 0o700)
        except OSError as exc:
            raise _os_tar_error(exc, staging) from None
        self._reader = TarReader()
        self._dirs: set[str] = {""}  # made here, so safe to write under
        self._others: set[str] = set()
        self._dir_meta: dict[str, tuple[int, float]] = {}
        self._fd = -1
        self._file: Member | None = None
        self._written = 0
        self._digest = hashlib.sha256()
        self.files = 0
        self.directories = 0
        self.bytes = 0
        self.hashes: dict[str, str] = {}
        self._aborted = False

    def _full(self, path: str) -> str:
        return os.path.join(self.staging, path) if path else self.staging

    def feed(self, data: bytes) -> None:
        if self._aborted:
            raise TarError("io_error", "the transfer was aborted")
        for event in self._reader.feed(data):
            try:
                if isinstance(event, Member):
                    self._start(event)
                elif isinstance(event, bytes):
                    self._write(event)
            except OSError as exc:
                where = event.path if isinstance(event, Member) else self._current_path()
                raise _os_tar_error(exc, where or ".") from None

    def _current_path(self) -> str:
        return self._file.path if self._file is not None else ""

    def _parents(self, path: str) -> None:
        """Make the member's missing parents; refuse to pass through anything not made here."""
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent in self._dirs:
                continue
            if parent in self._others:
                raise TarError("unsafe_path", f"{path}: its parent {parent} is not a directory")
            os.mkdir(self._full(parent), 0o700)
            self._dirs.add(parent)
            self._dir_meta.setdefault(parent, (0o755, 0.0))

    def _start(self, member: Member) -> None:
        path = member.path
        if path == "":
            self._dir_meta[""] = (member.mode, member.mtime)
            return
        self._parents(path)
        full = self._full(path)
        if path in self._dirs:
            if member.type != "directory":
                raise TarError("unsupported_member", f"{path}: replaces a directory in the archive")
            self._dir_meta[path] = (member.mode, member.mtime)
            return
        if path in self._others:  # a later member of the same name wins, as in tar
            os.unlink(full)
            self._others.discard(path)
            self.hashes.pop(path, None)
        if member.type == "directory":
            os.mkdir(full, 0o700)
            self._dirs.add(path)
            self._dir_meta[path] = (member.mode, member.mtime)
            self.directories += 1
        elif member.type == "symlink":
            os.symlink(member.link_target, full)
            self._others.add(path)
            os.utime(full, (member.mtime, member.mtime), follow_symlinks=False)
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            self._fd = os.open(full, flags, 0o600)
            self._others.add(path)
            self._file = member
            self._written = 0
            self._digest = hashlib.sha256()
            if member.size == 0:
                self._end_file()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            done = os.write(self._fd, view)
            view = view[done:]
        self._digest.update(data)
        self._written += len(data)
        self.bytes += len(data)
        assert self._file is not None
        if self._written >= self._file.size:
            self._end_file()

    def _end_file(self) -> None:
        member = self._file
        assert member is not None
        fd, self._fd, self._file = self._fd, -1, None
        try:
            os.fchmod(fd, member.mode & 0o7777)
        finally:
            os.close(fd)
        os.utime(self._full(member.path), (member.mtime, member.mtime), follow_symlinks=False)
        self.hashes[member.path] = self._digest.hexdigest()
        self.files += 1

    def finish(self) -> TreeWriter:
        """The whole archive arrived: set directory modes and hand over the staged tree."""
        if self._file is not None or not self._reader.finished:
            self.abort()
            raise TarError("truncated", "the tar stream ended before its end-of-archive marker")
        try:
            # Deepest first, so a read-only directory is closed only after its children.
            for path in sorted(self._dir_meta, key=lambda p: p.count("/") + bool(p), reverse=True):
                mode, mtime = self._dir_meta[path]
                full = self._full(path)
                os.chmod(full, mode & 0o7777)
                if mtime:
                    os.utime(full, (mtime, mtime), follow_symlinks=False)
            if "" not in self._dir_meta:
                os.chmod(self.staging, 0o755)
        except OSError as exc:
            self.abort()
            raise _os_tar_error(exc, self.staging) from None
        self._aborted = True  # the writer owns the staging tree from here
        return TreeWriter(self.staging, self.files, self.directories, self.bytes, self.hashes)

    def abort(self) -> None:
        """Drop everything staged; safe to call more than once."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if not self._aborted:
            self._aborted = True
            with contextlib.suppress(OSError):
                _remove_tree(self.staging)


class TreeWriter:
    """A complete staged tree: verify its hashes, then commit it into place (or abort)."""

    def __init__(
        self, staging: str, files: int, directories: int, size: int, hashes: dict[str, str]
    ) -> None:
        self.staging = staging
        self.files = files
        self.directories = directories
        self.bytes = size
        self.hashes = hashes

    def verify(self, expected: Mapping[str, str]) -> None:
        if dict(expected) == self.hashes:
            return
        differ = sorted(set(expected.items()) ^ set(self.hashes.items()))
        self.abort()
        raise TarError("checksum_mismatch", differ[0][0] if differ else "")

    def commit(self, dest: str, merge: bool) -> None:
        """Move the tree to dest: a rename when dest is absent or an empty directory, otherwise
        (merge) file by file with os.replace, never following a symlink under dest."""
        try:
            st = os.stat(dest)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            self.abort()
            raise _os_tar_error(exc, dest) from None
        try:
            if st is None:
                os.rename(self.staging, dest)
                return
            if not stat.S_ISDIR(st.st_mode):
                raise TarError("not_a_directory", f"{dest}: exists and is not a directory")
            if not os.path.islink(dest) and not os.listdir(dest):
                os.rename(self.staging, dest)
                return
            if not merge:
                raise TarError("not_empty", f"{dest}: exists and is not empty")
            conflict = _first_conflict(self.staging, dest)
            if conflict:
                raise TarError(
                    "type_conflict", f"{conflict}: a directory there would be replaced by a file"
                )
            _merge(self.staging, dest)
        except OSError as exc:
            self.abort()
            raise _os_tar_error(exc, dest) from None
        except TarError:
            self.abort()
            raise
        self.abort()  # what is left of staging: directories whose contents moved

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            _remove_tree(self.staging)


def _is_real_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _first_conflict(src: str, dst: str) -> str:
    with os.scandir(src) as entries:
        for entry in entries:
            target = os.path.join(dst, entry.name)
            if entry.is_dir(follow_symlinks=False):
                if _is_real_dir(target):
                    found = _first_conflict(entry.path, target)
                    if found:
                        return found
            elif _is_real_dir(target):
                return target
    return ""


def _merge(src: str, dst: str) -> None:
    with os.scandir(src) as entries:
        names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    for name, is_dir in names:
        s, d = os.path.join(src, name), os.path.join(dst, name)
        if is_dir and _is_real_dir(d):
            st = os.lstat(s)
            os.chmod(d, 0o700 | stat.S_IMODE(os.lstat(d).st_mode))
            _merge(s, d)
            os.chmod(d, stat.S_IMODE(st.st_mode))
            os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        elif is_dir:
            if os.path.lexists(d):
                os.unlink(d)  # a file or symlink where the tree has a directory
            os.rename(s, d)
        else:
            os.replace(s, d)  # atomic per file; replaces a symlink itself, never its target


# --- packing ---------------------------------------------------------------------------------


def walk(root: str, exclude: Callable[[str], bool] | None = None) -> list[Member]:
    """Every file, directory and symlink under root (not root itself), parents first and
    sorted; symlinks are never followed and other file types are skipped."""
    found: list[Member] = []

    def visit(directory: str, prefix: str) -> None:
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except PermissionError:
            raise TarError("permission_denied", f"{directory}: permission denied") from None
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            if exclude is not None and exclude(rel):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since the listing
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                found.append(Member(rel, "directory", 0, mode, st.st_mtime))
                visit(entry.path, rel + "/")
            elif stat.S_ISREG(st.st_mode):
                found.append(Member(rel, "file", st.st_size, mode, st.st_mtime))
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(entry.path)
                found.append(Member(rel, "symlink", 0, mode, st.st_mtime, target))

    visit(root, "")
    return found


class TreePacker:
    """Reads members under root as one tar stream, hashing every file as it goes."""

    def __init__(self, root: str, members: Iterable[Member]) -> None:
        self.root = root
        self.members = list(members)
        self.total_bytes = sum(m.size for m in self.members if m.type == "file")
        self.bytes_read = 0
        self.hashes: dict[str, str] = {}
        self._next = 0
        self._buf = bytearray()
        self._fd = -1
        self._file: Member | None = None
        self._left = 0
        self._digest = hashlib.sha256()
        self._done = False

    def read(self, size: int) -> bytes:
        """Up to size bytes of the stream; b"" only once it has all been read."""
        while len(self._buf) < size and not self._done:
            if self._file is not None:
                self._read_file(max(size - len(self._buf), READ_CHUNK))
            elif self._next < len(self.members):
                member = self.members[self._next]
                self._next += 1
                self._open(member)
            else:
                self._buf += END_OF_ARCHIVE
                self._done = True
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def _open(self, member: Member) -> None:
        if member.type != "file":
            self._buf += encode_header(member)
            return
        full = os.path.join(self.root, member.path)
        try:
            self._fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise TarError("source_changed", f"{member.path}: removed while packing") from None
        except OSError as exc:
            raise _os_tar_error(exc, member.path) from None
        self._buf += encode_header(member)
        self._file = member
        self._left = member.size
        self._digest = hashlib.sha256()
        if member.size == 0:
            self._close_file()

    def _read_file(self, want: int) -> None:
        member = self._file
        assert member is not None
        try:
            data = os.read(self._fd, min(want, self._left))
        except OSError as exc:
            self._close_fd()
            raise _os_tar_error(exc, member.path) from None
        if not data:
            self._close_fd()
            raise TarError("source_changed", f"{member.path}: shrank while packing")
        self._digest.update(data)
        self._buf += data
        self._left -= len(data)
        self.bytes_read += len(data)
        if self._left == 0:
            self._close_file()

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._file = None

    def _close_file(self) -> None:
        member = self._file
        assert member is not None
        self._close_fd()
        self.hashes[member.path] = self._digest.hexdigest()
        self._buf += padding(member.size)

    def close(self) -> None:
        self._close_fd()
        self._done = True
