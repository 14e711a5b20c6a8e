"""The typed client's file methods: list, read, write, push, pull, patch, and offline disks.

A mixin of AsyncGrove (it needs only the stub and the error mapping). Push and pull move the
bytes as chunked streams; ``progress`` (if given) hears a TransferProgress per chunk. Both
check every file's sha256 end to end and keep nothing that did not match.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from engine.api import grove_pb2 as pb
from engine.api import wire
from engine.client import models as m
from engine.client import pullsink, pushplan
from engine.errors import GroveError

CHUNK = 256 * 1024

Progress = Callable[[m.TransferProgress], None]


def _quiet(_p: m.TransferProgress) -> None:
    """No progress wanted."""


class FileMethods:
    _stub: Any
    info: m.EngineInfo | None

    async def _unary(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        raise NotImplementedError

    def _stream(self, method: Any, request: Any) -> AsyncIterator[Any]:
        raise NotImplementedError

    def _push_limit(self) -> int | None:
        limits = self.info.limits if self.info is not None else None
        return limits.max_push_bytes if limits is not None else None

    # live sandboxes

    async def file_list(self, ref: str, path: str, recursive: bool = False) -> list[m.FileEntry]:
        request = pb.FileListRequest(sandbox=ref, path=path, recursive=recursive)
        reply = await self._unary(self._stub.FileList, request)
        return [wire.file_entry(e) for e in reply.entries]

    async def file_read(self, ref: str, path: str, max_bytes: int = 0) -> m.FileRead:
        """The first max_bytes of a guest file (0: 64 KiB); .truncated says there is more."""
        request = pb.FileReadRequest(sandbox=ref, path=path, max_bytes=max_bytes)
        return wire.file_read(path, await self._unary(self._stub.FileRead, request))

    async def file_write(self, ref: str, path: str, data: bytes, mode: int = 0o644) -> m.PushResult:
        """Write a whole guest file atomically (parents created); binary-safe."""
        import hashlib

        start = pb.PushStart(
            sandbox=ref, dest=path, format="file", mode=mode, total_bytes=len(data), files=1
        )
        chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
        commit = pb.PushCommit(sha256={"": hashlib.sha256(data).hexdigest()})
        started = time.perf_counter()
        reply = await self._push_call(start, chunks, commit)
        return _push_result(ref, "-", reply, started)

    async def push_files(
        self,
        ref: str,
        source: str | Path,
        dest: str,
        exclude: Sequence[str] = (),
        ignore: bool = True,
        progress: Progress | None = None,
    ) -> m.PushResult:
        """A local file, directory (into dest, merged) or tar; .gitignore applies in a git
        work tree unless ignore=False."""
        report = progress or _quiet
        local = Path(source)
        report(m.TransferProgress("planning"))
        plan = pushplan.plan(local, exclude, ignore, self._push_limit())
        start = pb.PushStart(
            sandbox=ref, dest=dest, format=plan.format, mode=plan.mode,
            total_bytes=plan.total_bytes, files=plan.files,
        )  # fmt: skip
        packer = plan.packer()
        total = plan.total_bytes
        sent = 0

        def chunks() -> Any:
            nonlocal sent
            while data := packer.read(CHUNK):
                sent += len(data)
                report(m.TransferProgress("sending", min(sent, total), total, plan.files))
                yield data

        started = time.perf_counter()
        reply = await self._push_call(start, chunks(), None, packer)
        report(m.TransferProgress("done", total, total, plan.files))
        return _push_result(ref, str(local), reply, started, plan.excluded)

    async def _push_call(
        self, start: pb.PushStart, chunks: Any, commit: pb.PushCommit | None, packer: Any = None
    ) -> pb.PushReply:
        call = self._stub.Push()
        try:
            await call.write(pb.PushInput(start=start))
            for data in chunks:
                await call.write(pb.PushInput(data=data))
            if commit is None:
                commit = pb.PushCommit(sha256=packer.hashes)
            await call.write(pb.PushInput(commit=commit))
            await call.done_writing()
            reply: pb.PushReply = await call
            return reply
        except grpc.RpcError as exc:
            raise _grove_error(exc) from None
        except BaseException:
            call.cancel()  # the engine aborts, the guest drops what it staged
            raise

    async def pull_files(
        self,
        ref: str,
        path: str,
        output: str | Path,
        as_tar: bool = False,
        force: bool = False,
        progress: Progress | None = None,
    ) -> m.PullResult:
        """A guest file to output, or a directory unpacked there (or kept as a tar)."""
        report = progress or _quiet
        started = time.perf_counter()
        call = self._stub.Pull(pb.FilePullRequest(sandbox=ref, path=path))
        sink: pullsink.Sink | None = None
        kind = "file"
        total = received = 0
        dest = Path(output)
        try:
            async for message in call:
                which = message.WhichOneof("kind")
                if which == "header":
                    kind = message.header.type
                    total = message.header.size
                    target_kind = "file" if (kind == "file" or as_tar) else "directory"
                    dest = pullsink.destination(Path(output), path, target_kind, force)
                    if kind == "file":
                        sink = pullsink.FileSink(dest)
                    elif as_tar:
                        sink, kind = pullsink.TarSink(dest), "tar"
                    else:
                        sink = pullsink.TreeSink(dest, merge=force)
                    report(m.TransferProgress("receiving", 0, total, message.header.files))
                elif which == "data" and sink is not None:
                    sink.write(message.data)
                    received += len(message.data)
                    report(m.TransferProgress("receiving", min(received, total), total))
                elif which == "trailer" and sink is not None:
                    report(m.TransferProgress("verifying", total, total))
                    files = sink.finish(dict(message.trailer.sha256))
                    sink = None
                    report(m.TransferProgress("done", total, total, files))
                    return m.PullResult(
                        sandbox=ref, path=path, output=str(dest), type=kind,
                        bytes=message.trailer.bytes or received, files=files,
                        duration_ms=(time.perf_counter() - started) * 1000,
                    )  # fmt: skip
        except grpc.RpcError as exc:
            raise _grove_error(exc) from None
        finally:
            if sink is not None:
                sink.abort()
            call.cancel()
        raise GroveError(
            "pull_interrupted",
            f"the pull of {path} ended before its checksums; nothing was written",
            "retry the pull",
        )

    async def apply_patch(self, ref: str, patch: str, dry_run: bool = False) -> m.PatchResult:
        request = pb.PatchRequest(sandbox=ref, patch=patch, dry_run=dry_run)
        reply = await self._unary(self._stub.ApplyPatch, request)
        return m.PatchResult(
            sandbox=ref, added=tuple(reply.added), modified=tuple(reply.modified),
            deleted=tuple(reply.deleted), dry_run=dry_run,
        )  # fmt: skip

    # offline disks

    async def disk_list(self, target: str, path: str, recursive: bool = False) -> list[m.FileEntry]:
        request = pb.DiskListRequest(target=target, path=path, recursive=recursive)
        reply = await self._unary(self._stub.DiskList, request)
        return [wire.file_entry(e) for e in reply.entries]

    async def disk_read(self, target: str, path: str, max_bytes: int = 0) -> m.FileRead:
        request = pb.DiskReadRequest(target=target, path=path, max_bytes=max_bytes)
        return wire.file_read(path, await self._unary(self._stub.DiskRead, request))

    async def disk_export(
        self, target: str, output: str | Path, fmt: str = "qcow2", progress: Progress | None = None
    ) -> m.ExportResult:
        """The whole disk chain flattened into one image at output (which must not exist)."""
        report = progress or _quiet
        dest = Path(output)
        if dest.exists() or dest.is_symlink():
            raise GroveError(
                "local_exists", f"'{dest}' already exists", "choose another -o, or remove it"
            )
        if not dest.parent.is_dir():
            raise GroveError(
                "local_not_found", f"local directory '{dest.parent}' does not exist",
                "create it first, or pick another -o",
            )  # fmt: skip
        started = time.perf_counter()
        temp = dest.parent / f".{dest.name}.grove-export"
        request = pb.DiskExportRequest(target=target, format=fmt)
        size = virtual = received = 0
        handle = None
        try:
            async for message in self._stream(self._stub.DiskExport, request):
                which = message.WhichOneof("kind")
                if which == "progress":
                    percent = message.progress.percent
                    report(m.TransferProgress("converting", int(percent * 100), 10000))
                elif which == "header":
                    size, virtual = message.header.size, message.header.virtual_size
                    handle = open(temp, "wb")  # noqa: SIM115 - closed below
                elif which == "data" and handle is not None:
                    handle.write(message.data)
                    received += len(message.data)
                    report(m.TransferProgress("receiving", received, size))
            if handle is None or received != size:
                raise GroveError(
                    "export_interrupted",
                    f"the export of {target} ended after {received} of {size} bytes",
                    "retry the export",
                )
            handle.close()
            temp.rename(dest)
        finally:
            if handle is not None:
                handle.close()
            temp.unlink(missing_ok=True)
        report(m.TransferProgress("done", size, size))
        return m.ExportResult(
            target=target, output=str(dest), format=fmt, bytes=size, virtual_size=virtual,
            duration_ms=(time.perf_counter() - started) * 1000,
        )  # fmt: skip


def _push_result(
    ref: str, source: str, reply: pb.PushReply, started: float, excluded: int = 0
) -> m.PushResult:
    return m.PushResult(
        sandbox=ref, source=source, dest=reply.dest, bytes=reply.bytes, files=reply.files,
        directories=reply.directories, duration_ms=(time.perf_counter() - started) * 1000,
        excluded=excluded,
    )  # fmt: skip


def _grove_error(exc: grpc.RpcError) -> GroveError:
    from engine.api.aio_client import grove_error

    return grove_error(exc)


class AsyncSandboxFiles:
    """One sandbox's files: ``(await AsyncGrove.connect()).files(ref).read("/etc/hostname")``."""

    def __init__(self, client: FileMethods, ref: str) -> None:
        self._client = client
        self.ref = ref

    async def list(self, path: str, recursive: bool = False) -> list[m.FileEntry]:
        return await self._client.file_list(self.ref, path, recursive)

    async def read(self, path: str, max_bytes: int = 0) -> m.FileRead:
        return await self._client.file_read(self.ref, path, max_bytes)

    async def write(self, path: str, data: bytes, mode: int = 0o644) -> m.PushResult:
        return await self._client.file_write(self.ref, path, data, mode)

    async def push(
        self, source: str | Path, dest: str, exclude: Sequence[str] = (), ignore: bool = True,
        progress: Progress | None = None,
    ) -> m.PushResult:  # fmt: skip
        return await self._client.push_files(self.ref, source, dest, exclude, ignore, progress)

    async def pull(
        self, path: str, output: str | Path, as_tar: bool = False, force: bool = False,
        progress: Progress | None = None,
    ) -> m.PullResult:  # fmt: skip
        return await self._client.pull_files(self.ref, path, output, as_tar, force, progress)

    async def patch(self, patch: str, dry_run: bool = False) -> m.PatchResult:
        return await self._client.apply_patch(self.ref, patch, dry_run)
