"""File verbs on a running sandbox, through its guest agent: list, read, push, pull, patch.

Bulk bytes travel as DATA frames under the agent's credit (engine.agent.transfer), and every
transfer is checked file by file with sha256 before anything is kept: a push is staged in the
guest and renamed into place only after its hashes match; a pull ends with the guest's hashes
so the client checks each file before it renames its own staging into place.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from engine.agent.client import AgentClient, AgentError
from engine.agent.transfer import Download, Upload
from engine.errors import GroveError, invalid
from engine.files import patch as patches
from engine.files.errors import file_error
from engine.files.limits import check_push_size, guest_path, read_size

#: Patch targets are read whole into the engine; a patch is for source files, not data.
MAX_PATCH_FILE = 8 * 1024 * 1024
OPEN_TIMEOUT_S = 30.0

_TYPES = {"dir": "directory", "file": "file", "symlink": "symlink"}


@dataclass(frozen=True, slots=True)
class Entry:
    path: str
    type: str  # file | directory | symlink | other
    size: int
    mode: int
    mtime: float
    link_target: str = ""


@dataclass(frozen=True, slots=True)
class ReadResult:
    data: bytes
    size: int
    truncated: bool
    mode: int
    mtime: float


@dataclass(frozen=True, slots=True)
class PushSpec:
    dest: str
    format: str  # file | tar
    mode: int = 0o644
    total_bytes: int = 0
    files: int = 0


@dataclass(frozen=True, slots=True)
class PushResult:
    dest: str
    bytes: int
    files: int
    directories: int
    duration_ms: float


@dataclass(frozen=True, slots=True)
class PullHeader:
    type: str  # file | directory
    size: int
    mode: int
    files: int


@dataclass(frozen=True, slots=True)
class PullTrailer:
    sha256: dict[str, str]
    bytes: int


@dataclass(frozen=True, slots=True)
class PatchResult:
    added: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def entry(data: dict[str, object], path: str) -> Entry:
    kind = str(data.get("type", "other"))
    return Entry(
        path=path,
        type=_TYPES.get(kind, "other"),
        size=int(str(data.get("size", 0))),
        mode=int(str(data.get("mode", 0))),
        mtime=int(str(data.get("mtime_ns", 0))) / 1e9,
        link_target=str(data.get("target", "")),
    )


class LiveFiles:
    """agent_of(ref) -> (sandbox id, agent) raises sandbox_not_running for a stopped one."""

    def __init__(
        self, agent_of: Callable[[str], tuple[str, AgentClient]], push_limit: Callable[[], int]
    ) -> None:
        self._agent_of = agent_of
        self._push_limit = push_limit

    async def list(self, ref: str, path: str, recursive: bool = False) -> list[Entry]:
        path = guest_path(path)
        sandbox, agent = self._agent_of(ref)
        try:
            top = entry(await agent.stat(path), path)
            if top.type != "directory":
                return [top]
            found = await agent.fs_manifest(
                path, hash_files=False, one_file_system=False, max_depth=0 if recursive else 1
            )
        except AgentError as exc:
            raise file_error(exc, sandbox, path) from exc
        base = path.rstrip("/")
        return [entry(e, f"{base}/{e['path']}") for e in found]

    async def read(self, ref: str, path: str, max_bytes: int = 0) -> ReadResult:
        path = guest_path(path)
        limit = read_size(max_bytes)
        sandbox, agent = self._agent_of(ref)
        try:
            info = entry(await agent.stat(path), path)
            if info.type == "directory":
                raise AgentError("not_a_file", path)
            # One byte more than asked says whether the file goes on.
            data = await agent.read_file(path, 0, limit + 1)
        except AgentError as exc:
            raise file_error(exc, sandbox, path) from exc
        truncated = len(data) > limit
        size = max(info.size, len(data)) if info.type == "file" else len(data)
        return ReadResult(data[:limit], size, truncated, info.mode, info.mtime)

    async def push(
        self, ref: str, spec: PushSpec, stream: AsyncIterator[bytes | dict[str, str]]
    ) -> PushResult:
        """stream: data chunks, then one dict (relative path or "" -> sha256): the commit.

        A stream that ends without the commit (the client went away) or any failure aborts:
        the guest removes what it staged and the destination keeps its old content.
        """
        dest = guest_path(spec.dest, "destination")
        if spec.format not in ("file", "tar"):
            raise invalid(f"invalid push format {spec.format!r}", "upgrade the client")
        if not 0 <= spec.mode <= 0o7777:
            raise invalid(f"invalid mode {spec.mode:o}", "pass an octal mode like 644")
        check_push_size(spec.total_bytes, self._push_limit())
        sandbox, agent = self._agent_of(ref)
        started = time.perf_counter()
        upload = Upload(agent)
        try:
            try:
                if spec.format == "file":
                    message = {"op": "file_write", "path": dest, "mode": spec.mode or 0o644}
                    await upload.open({**message, "mkdirs": True}, OPEN_TIMEOUT_S)
                else:
                    await upload.open({"op": "tree_push", "dest": dest}, OPEN_TIMEOUT_S)
                final = await self._send(upload, spec, stream)
            except AgentError as exc:
                raise file_error(exc, sandbox, dest) from exc
        finally:
            await upload.close()
        return PushResult(
            dest=dest,
            bytes=int(final.get("bytes", upload.sent)),
            files=int(final.get("files", 1 if spec.format == "file" else 0)),
            directories=int(final.get("directories", 0)),
            duration_ms=(time.perf_counter() - started) * 1000,
        )

    async def _send(
        self, upload: Upload, spec: PushSpec, stream: AsyncIterator[bytes | dict[str, str]]
    ) -> dict[str, Any]:
        limit = self._push_limit()
        async for item in stream:
            if isinstance(item, dict):
                if spec.format == "file":
                    return await upload.commit(sha256=item.get("", ""))
                return await upload.commit(sha256=item)
            if upload.sent + len(item) > limit + _tar_slack(spec):
                check_push_size(upload.sent + len(item), limit)
            await upload.send(item)
        raise GroveError(
            "push_interrupted",
            f"the push to {spec.dest} ended before its commit; nothing was changed",
            "retry the push",
        )

    async def pull(self, ref: str, path: str) -> AsyncIterator[PullHeader | bytes | PullTrailer]:
        """A header, the bytes (the file, or a tar of the directory), then every file's sha256."""
        path = guest_path(path)
        sandbox, agent = self._agent_of(ref)
        download = Download(agent)
        try:
            try:
                info = entry(await agent.stat(path), path)
                if info.type == "symlink":
                    info = await self._follow(agent, path)
                if info.type == "file":
                    await download.open({"op": "file_read", "path": path}, OPEN_TIMEOUT_S)
                    yield PullHeader("file", info.size, info.mode, 1)
                elif info.type == "directory":
                    reply = await download.open({"op": "tree_pull", "path": path}, OPEN_TIMEOUT_S)
                    yield PullHeader(
                        "directory", int(reply["bytes"]), int(reply["mode"]), int(reply["files"])
                    )
                else:
                    raise AgentError("not_a_file", path)
                async for chunk in download.chunks():
                    yield chunk
                final = download.final or {}
                hashes: dict[str, str] = {}
                if info.type == "file":
                    hashes[""] = str(final.get("sha256", ""))
                for event in download.events():
                    if event.get("event") == "hashes":
                        hashes.update(event.get("sha256") or {})
                yield PullTrailer(hashes, int(final.get("bytes", 0)))
            except AgentError as exc:
                raise file_error(exc, sandbox, path) from exc
        finally:
            await download.close()

    async def _follow(self, agent: AgentClient, path: str) -> Entry:
        """What a symlink points at: "path/." stats the target directory, fails for a file."""
        try:
            return entry(await agent.stat(path + "/."), path)
        except AgentError:
            return Entry(path, "file", 0, 0o644, 0.0)

    async def apply_patch(self, ref: str, text: str, dry_run: bool = False) -> PatchResult:
        """Every file is planned (read, checked, patched in memory) before the first write."""
        parsed = patches.parse(text)
        sandbox, agent = self._agent_of(ref)
        current: dict[str, bytes | None] = {}
        modes: dict[str, int] = {}  # a modified file keeps its mode
        for path in patches.paths(parsed):
            found = await self._read_whole(agent, sandbox, path)
            current[path] = found[0] if found else None
            if found:
                modes[path] = found[1]
        planned = patches.plan(parsed, current)
        result = PatchResult()
        for item in planned:
            {"add": result.added, "modify": result.modified, "delete": result.deleted}[
                item.op
            ].append(item.path)
        if dry_run:
            return result
        for item in planned:
            try:
                if item.content is None:
                    await agent.remove(item.path)
                else:
                    mode = modes.get(item.path, 0o644)
                    await agent.write_file(item.path, item.content, mode=mode, mkdirs=True)
            except AgentError as exc:
                raise file_error(exc, sandbox, item.path) from exc
        return result

    async def _read_whole(
        self, agent: AgentClient, sandbox: str, path: str
    ) -> tuple[bytes, int] | None:
        """A patch target's content and mode; None when it does not exist."""
        try:
            info = entry(await agent.stat(path), path)
            if info.type == "directory":
                raise AgentError("not_a_file", path)
            if info.size > MAX_PATCH_FILE:
                raise GroveError(
                    "patch_too_large",
                    f"{path} is {info.size} bytes; patches apply to files up to "
                    f"{MAX_PATCH_FILE // (1024 * 1024)} MiB",
                    "push the file instead",
                )
            return await agent.read_file(path), info.mode
        except AgentError as exc:
            if exc.code == "not_found":
                return None
            raise file_error(exc, sandbox, path) from exc


def _tar_slack(spec: PushSpec) -> int:
    """A tar carries headers and padding beyond its file bytes (directories and links too)."""
    return 0 if spec.format == "file" else 2048 * (spec.files + 1) + 16 * 1024 * 1024
