"""File transfer and tree manifests.

``file_read`` streams a file as DATA (stream 1) under the engine's credit and ends with an
``eof`` event carrying the sha256; ``file_write`` receives DATA (stream 0) into a temporary file
that replaces the target atomically on EOF. ``fs_manifest`` walks a tree on a worker thread and
streams ``entries`` events (path, type, size, mode, sha256 for regular files): ``sandbox diff``
compares two of them. Transfers do not survive a disconnect: they are aborted, not resumed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import threading
import time
from typing import Any

from ..protocol import DATA_CHUNK, STDIN, STDOUT, encode_data
from . import log
from .flow import RecvWindow, SendWindow
from .server import OUT_HIGH, Reply, RequestError, Server, Session

MANIFEST_BATCH = 256
HASH_CHUNK = 1024 * 1024


def _path(request: dict[str, Any], key: str = "path") -> str:
    path = request.get(key)
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise RequestError("bad_request", f"{key} must be an absolute path")
    return path


def _os_error(exc: OSError, path: str) -> RequestError:
    codes = {
        errno.ENOENT: "not_found",
        errno.EACCES: "permission_denied",
        errno.EPERM: "permission_denied",
        errno.EISDIR: "not_a_file",
        errno.ENOTDIR: "not_found",
        errno.ENOSPC: "no_space",
        errno.EROFS: "read_only",
    }
    code = codes.get(exc.errno or 0, "io_error")
    return RequestError(code, f"{path}: {exc.strerror or exc}")


class TransferSession(Session):
    """A transfer does not survive a disconnect: detaching ends it, and ending it first drops
    what it holds (terminate) so nothing half-written stays behind."""

    def end(self, event: dict[str, Any]) -> None:
        """The final event: release, tell the engine, forget the channel."""
        self.terminate()
        self.server.reply(self.channel, event)
        self.server.end_session(self.channel)

    def detach(self) -> None:
        super().detach()
        self.terminate()
        self.server.end_session(self.channel)


class SendingSession(TransferSession):
    """A session that pumps DATA out under the engine's credit: pump() sends what the window
    and the send queue allow, and runs again when either grows."""

    def __init__(self, server: Server, channel: int) -> None:
        super().__init__(server, channel)
        self.window = SendWindow()
        self._scheduled = False

    def pump(self) -> None:
        raise NotImplementedError

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self.server.loop.call_soon(self.pump)

    def on_window(self, credit: int) -> None:
        self.window.grant(credit)
        self._schedule()

    def on_room(self) -> None:
        self._schedule()


class FileReadSession(SendingSession):
    kind = "file_read"
    controls = frozenset({"abort"})

    def __init__(self, server: Server, channel: int, fd: int, remaining: int | None) -> None:
        super().__init__(server, channel)
        self.fd = fd
        self.remaining = remaining
        self.digest = hashlib.sha256()
        self.sent = 0

    def pump(self) -> None:
        self._scheduled = False
        if self.fd < 0 or not self.attached:
            return
        # Regular files cannot be polled: read while credit and queue room last, then wait
        # for on_window / on_room. A few chunks per turn keep the loop responsive.
        for _ in range(8):
            size = min(self.window.available, DATA_CHUNK)
            if self.remaining is not None:
                size = min(size, self.remaining)
            if self.remaining == 0:
                self._finish()
                return
            if size <= 0 or not self.server.can_send():
                return
            try:
                data = os.read(self.fd, size)
            except OSError as exc:
                self._finish(error=_os_error(exc, "read").reply())
                return
            if not data:
                self._finish()
                return
            self.digest.update(data)
            self.sent += len(data)
            if self.remaining is not None:
                self.remaining -= len(data)
            self.window.take(len(data))
            self.server.send(encode_data(self.channel, STDOUT, data))
        self._schedule()

    def on_control(self, op: str, request: dict[str, Any]) -> None:
        self.end({"event": "aborted"})

    def _finish(self, error: Reply | None = None) -> None:
        if error is not None:
            self.end({"event": "error", **error})
        else:
            self.end({"event": "eof", "bytes": self.sent, "sha256": self.digest.hexdigest()})

    def terminate(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class FileWriteSession(TransferSession):
    """Empty DATA commits; so does a ``commit`` control, which first checks the sha256 the engine
    sends against what arrived, so a corrupted or cut-short upload never replaces the file."""

    kind = "file_write"
    controls = frozenset({"commit", "abort"})

    def __init__(self, server: Server, channel: int, fd: int, tmp: str | None, path: str) -> None:
        super().__init__(server, channel)
        self.fd = fd
        self.tmp = tmp  # None when appending in place
        self.path = path
        self.recv = RecvWindow()
        self.digest = hashlib.sha256()
        self.received = 0

    def on_data(self, stream: int, data: bytes) -> None:
        if stream != STDIN or self.fd < 0:
            return
        if not data:
            self._commit()
            return
        self.recv.received(len(data))
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as exc:
            self._fail(_os_error(exc, self.path).reply())
            return
        self.digest.update(data)
        self.received += len(data)
        self.server.window(self.channel, self.recv.consumed(len(data), idle=True))

    def on_control(self, op: str, request: dict[str, Any]) -> None:
        if self.fd < 0:
            return
        if op == "abort":
            self.end({"event": "aborted"})
            return
        expected = request.get("sha256")
        if expected != self.digest.hexdigest():
            text = f"{self.path}: sha256 of the {self.received} bytes received does not match"
            self._fail({"ok": False, "code": "checksum_mismatch", "error": text})
            return
        self._commit()

    def _commit(self) -> None:
        try:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1
            if self.tmp is not None:
                os.replace(self.tmp, self.path)
                self.tmp = None
        except OSError as exc:
            self._fail(_os_error(exc, self.path).reply())
            return
        self.end({"event": "done", "bytes": self.received, "sha256": self.digest.hexdigest()})

    def _fail(self, error: Reply) -> None:
        self.end({"event": "error", **error})

    def terminate(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            self.tmp = None


def _type(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        while chunk := os.read(fd, HASH_CHUNK):
            digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


def manifest_entry(path: str, rel: str, st: os.stat_result, hash_files: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "path": rel,
        "type": _type(st.st_mode),
        "size": st.st_size if stat.S_ISREG(st.st_mode) else 0,
        "mode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mtime_ns": st.st_mtime_ns,
    }
    if stat.S_ISLNK(st.st_mode):
        entry["target"] = os.readlink(path)
    elif stat.S_ISREG(st.st_mode) and hash_files:
        try:
            entry["sha256"] = file_sha256(path)
        except OSError as exc:
            entry["error"] = exc.strerror or str(exc)
    return entry


class FileOps:
    def __init__(self, server: Server) -> None:
        self.server = server
        server.register("file_read", self.op_file_read)
        server.register("file_write", self.op_file_write)
        server.register("fs_manifest", self.op_fs_manifest)

    def op_file_read(self, channel: int, request: dict[str, Any]) -> None:
        path = _path(request)
        offset = request.get("offset", 0)
        length = request.get("length")
        if not isinstance(offset, int) or offset < 0:
            raise RequestError("bad_request", "offset must be a non-negative integer")
        if length is not None and (not isinstance(length, int) or length < 0):
            raise RequestError("bad_request", "length must be a non-negative integer")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise _os_error(exc, path) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise RequestError("not_a_file", f"{path}: not a regular file")
            if offset:
                os.lseek(fd, offset, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        session = FileReadSession(self.server, channel, fd, length)
        self.server.add_session(session)
        reply = {"ok": True, "size": st.st_size, "mode": stat.S_IMODE(st.st_mode)}
        reply["mtime_ns"] = st.st_mtime_ns
        self.server.reply(channel, reply)
        session.pump()

    def op_file_write(self, channel: int, request: dict[str, Any]) -> None:
        path = _path(request)
        mode = request.get("mode", 0o644)
        append = bool(request.get("append", False))
        if not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise RequestError("bad_request", "mode must be an integer permission mask")
        directory = os.path.dirname(path) or "/"
        try:
            if request.get("mkdirs"):
                os.makedirs(directory, exist_ok=True)
            if append:
                tmp = None
                flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
                fd = os.open(path, flags, mode)
            else:
                # Same directory, so the final rename is atomic.
                base = os.path.basename(path)
                tmp = os.path.join(directory, f".{base}.grove-{os.getpid()}-{channel}")
                flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
                fd = os.open(tmp, flags, mode)
                os.fchmod(fd, mode)  # umask must not change what was asked for
        except OSError as exc:
            raise _os_error(exc, path) from None
        self.server.add_session(FileWriteSession(self.server, channel, fd, tmp, path))
        self.server.reply(channel, {"ok": True})

    def op_fs_manifest(self, channel: int, request: dict[str, Any]) -> Reply:
        root = _path(request)
        hash_files = bool(request.get("hash", True))
        one_fs = bool(request.get("one_file_system", True))
        exclude = request.get("exclude", [])
        max_depth = request.get("max_depth", 0)  # 0: the whole tree; 1: root's entries only
        if not isinstance(max_depth, int) or max_depth < 0:
            raise RequestError("bad_request", "max_depth must be a non-negative integer")
        if not isinstance(exclude, list) or not all(isinstance(e, str) for e in exclude):
            raise RequestError("bad_request", "exclude must be a list of absolute paths")
        try:
            root_st = os.lstat(root)
        except OSError as exc:
            raise _os_error(exc, root) from None
        server = self.server
        generation = server.generation
        skip = {os.path.normpath(e) for e in exclude}

        def post(message: dict[str, Any]) -> bool:
            # Hold the walker back while the link is busy; stop if the peer changed.
            while server.out_pending() > OUT_HIGH and generation == server.generation:
                time.sleep(0.01)
            if generation != server.generation:
                return False

            def send() -> None:
                if generation == server.generation:
                    server.reply(channel, message)

            server.loop.call_soon_threadsafe(send)
            return True

        def walk() -> None:
            batch: list[dict[str, Any]] = []
            count = errors = 0
            stack = [(root, 1)]
            while stack:
                directory, depth = stack.pop()
                try:
                    with os.scandir(directory) as it:
                        children = sorted(it, key=lambda e: e.name)
                except OSError as exc:
                    errors += 1
                    log.debug(f"manifest: {directory}: {exc}")
                    continue
                for child in children:
                    if child.path in skip:
                        continue
                    try:
                        st = child.stat(follow_symlinks=False)
                    except OSError:
                        errors += 1
                        continue
                    if one_fs and st.st_dev != root_st.st_dev:
                        continue
                    rel = os.path.relpath(child.path, root)
                    entry = manifest_entry(child.path, rel, st, hash_files)
                    errors += "error" in entry
                    batch.append(entry)
                    count += 1
                    if stat.S_ISDIR(st.st_mode) and (not max_depth or depth < max_depth):
                        stack.append((child.path, depth + 1))
                    if len(batch) >= MANIFEST_BATCH:
                        if not post({"event": "entries", "entries": batch}):
                            return
                        batch = []
            if batch and not post({"event": "entries", "entries": batch}):
                return
            post({"event": "done", "count": count, "errors": errors})

        def run() -> None:
            try:
                walk()
            except Exception as exc:
                log.error(f"fs_manifest failed: {type(exc).__name__}: {exc}")
                post({"event": "error", "code": "internal", "error": f"{type(exc).__name__}"})

        threading.Thread(target=run, name="fs_manifest", daemon=True).start()
        return {"ok": True, "root_type": _type(root_st.st_mode)}
