"""Trees in and out: ``tree_push`` unpacks a tar stream, ``tree_pull`` packs one.

Both move bulk data as DATA frames under the channel's credit (guest.protocol), never through a
PTY. A push is staged next to its destination (same filesystem, so moving it into place is a
rename) and only moved there when the engine's ``commit`` carries a sha256 for every file that
matches what was written; ``abort``, a disconnect or any error removes the staging tree, so a
broken push leaves the old content and no temporary behind. A pull sends every file's sha256
after the data, so the far side checks each file before it keeps anything.

Also the small path ops the file verbs need: ``fs_stat`` and ``fs_remove``.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

from ..protocol import DATA_CHUNK, STDIN, STDOUT, encode_data
from ..tarstream import Member, TarError, TarExtractor, TreePacker, TreeWriter, walk
from .files import SendingSession, TransferSession, _os_error, _path, _type
from .flow import RecvWindow
from .server import Reply, RequestError, Server

#: Hashes go out in batches so one CTRL frame stays far below MAX_PAYLOAD for any tree size.
HASH_BATCH = 2000
#: A pull walks the tree before it answers; past this many entries it refuses (with a remedy).
MAX_PULL_ENTRIES = 200_000


def _tar_error(exc: TarError) -> Reply:
    return {"ok": False, "code": exc.code, "error": " ".join(exc.message.split())[:500]}


def staging_path(dest: str, channel: int, exists: bool) -> str:
    """Where a push is staged: on dest's own filesystem, so commit is a rename per entry.

    Inside dest when it is already a directory (it may be a mount point, whose parent is
    another filesystem), otherwise a hidden sibling; unique per transfer either way.
    """
    if exists:
        return os.path.join(dest, f".grove-push-{os.getpid()}-{channel}")
    parent, base = os.path.split(dest.rstrip("/") or "/")
    name = f".{base or 'root'}.grove-push-{os.getpid()}-{channel}"
    return os.path.join(parent or "/", name)


def entry_of(path: str, st: os.stat_result) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "path": path,
        "type": _type(st.st_mode),
        "size": st.st_size if stat.S_ISREG(st.st_mode) else 0,
        "mode": stat.S_IMODE(st.st_mode),
        "mtime_ns": st.st_mtime_ns,
    }
    if stat.S_ISLNK(st.st_mode):
        try:
            entry["target"] = os.readlink(path)
        except OSError:
            entry["target"] = ""
    return entry


class TreePushSession(TransferSession):
    kind = "tree_push"
    controls = frozenset({"commit", "abort"})

    def __init__(self, server: Server, channel: int, dest: str, staging: str) -> None:
        super().__init__(server, channel)
        self.dest = dest
        self.extractor: TarExtractor | None = TarExtractor(staging)
        self.recv = RecvWindow()

    def on_data(self, stream: int, data: bytes) -> None:
        if stream != STDIN or self.extractor is None or not data:
            return
        self.recv.received(len(data))
        try:
            self.extractor.feed(data)
        except TarError as exc:
            self._fail(_tar_error(exc))
            return
        self.server.window(self.channel, self.recv.consumed(len(data), idle=True))

    def on_control(self, op: str, request: dict[str, Any]) -> None:
        extractor = self.extractor
        if extractor is None:
            return
        if op == "abort":
            self.end({"event": "aborted"})
            return
        expected = request.get("sha256")
        if not isinstance(expected, dict):
            self._fail({"ok": False, "code": "bad_request", "error": "commit needs sha256"})
            return
        try:
            writer = extractor.finish()
            writer.verify(expected)
            # The tree is complete and intact: only now does anything change under dest.
            writer.commit(self.dest, merge=True)
        except TarError as exc:
            self._fail(_tar_error(exc))
            return
        self.extractor = None
        self.end(_summary(writer))

    def _fail(self, error: Reply) -> None:
        self.end({"event": "error", **error})

    def terminate(self) -> None:
        if self.extractor is not None:
            self.extractor.abort()
            self.extractor = None


def _summary(writer: TreeWriter) -> dict[str, Any]:
    return {
        "event": "done",
        "files": writer.files,
        "directories": writer.directories,
        "bytes": writer.bytes,
    }


class TreePullSession(SendingSession):
    """Streams the tar of a tree under the engine's credit, then every file's sha256."""

    kind = "tree_pull"
    controls = frozenset({"abort"})

    def __init__(self, server: Server, channel: int, packer: TreePacker) -> None:
        super().__init__(server, channel)
        self.packer: TreePacker | None = packer

    def pump(self) -> None:
        self._scheduled = False
        packer = self.packer
        if packer is None or not self.attached:
            return
        for _ in range(8):  # a few chunks per turn keep the loop responsive
            size = min(self.window.available, DATA_CHUNK)
            if size <= 0 or not self.server.can_send():
                return
            try:
                data = packer.read(size)
            except TarError as exc:
                self.end({"event": "error", **_tar_error(exc)})
                return
            if not data:
                self._finish(packer)
                return
            self.window.take(len(data))
            self.server.send(encode_data(self.channel, STDOUT, data))
        self._schedule()

    def _finish(self, packer: TreePacker) -> None:
        items = sorted(packer.hashes.items())
        for start in range(0, len(items), HASH_BATCH):
            batch = dict(items[start : start + HASH_BATCH])
            self.server.reply(self.channel, {"event": "hashes", "sha256": batch})
        self.end({"event": "done", "bytes": packer.bytes_read, "files": len(items)})

    def on_control(self, op: str, request: dict[str, Any]) -> None:
        self.end({"event": "aborted"})

    def terminate(self) -> None:
        self.packer = None


class TreeOps:
    def __init__(self, server: Server) -> None:
        self.server = server
        server.register("fs_stat", self.op_fs_stat)
        server.register("fs_remove", self.op_fs_remove)
        server.register("tree_push", self.op_tree_push)
        server.register("tree_pull", self.op_tree_pull)

    def op_fs_stat(self, channel: int, request: dict[str, Any]) -> Reply:
        path = _path(request)
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise _os_error(exc, path) from None
        return {"ok": True, **entry_of(path, st)}

    def op_fs_remove(self, channel: int, request: dict[str, Any]) -> Reply:
        path = _path(request)
        try:
            os.unlink(path)
        except OSError as exc:
            if exc.errno == errno.EISDIR:
                raise RequestError("not_a_file", f"{path}: is a directory") from None
            raise _os_error(exc, path) from None
        return {"ok": True}

    def op_tree_push(self, channel: int, request: dict[str, Any]) -> None:
        dest = os.path.normpath(_path(request, "dest"))
        try:
            st = os.stat(dest)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise _os_error(exc, dest) from None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise RequestError("not_a_directory", f"{dest}: exists and is not a directory")
        try:
            os.makedirs(os.path.dirname(dest) or "/", exist_ok=True)
        except OSError as exc:
            raise _os_error(exc, dest) from None
        staging = staging_path(dest, channel, st is not None)
        try:
            session = TreePushSession(self.server, channel, dest, staging)
        except TarError as exc:
            raise RequestError(exc.code, exc.message) from None
        self.server.add_session(session)
        self.server.reply(channel, {"ok": True, "staging": staging})

    def op_tree_pull(self, channel: int, request: dict[str, Any]) -> None:
        root = os.path.normpath(_path(request))
        try:
            st = os.stat(root)
        except OSError as exc:
            raise _os_error(exc, root) from None
        if not stat.S_ISDIR(st.st_mode):
            raise RequestError("not_a_directory", f"{root}: not a directory")
        try:
            members = walk(root)
        except TarError as exc:
            raise RequestError(exc.code, exc.message) from None
        except OSError as exc:
            raise _os_error(exc, root) from None
        if len(members) > MAX_PULL_ENTRIES:
            text = f"{root}: {len(members)} entries (at most {MAX_PULL_ENTRIES} per pull)"
            raise RequestError("too_many_entries", text)
        mode = stat.S_IMODE(st.st_mode)
        root_entry = Member(path="", type="directory", mode=mode, mtime=st.st_mtime)
        packer = TreePacker(root, [root_entry, *members])
        session = TreePullSession(self.server, channel, packer)
        self.server.add_session(session)
        files = sum(1 for m in members if m.type == "file")
        reply = {"ok": True, "files": files, "bytes": packer.total_bytes, "mode": mode}
        self.server.reply(channel, reply)
        session.pump()
