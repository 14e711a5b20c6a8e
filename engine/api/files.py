"""Files over the API: entries and reads to messages, push and pull streams to engine calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from engine.api import grove_pb2 as pb
from engine.errors import invalid
from engine.files.live import Entry, PullHeader, PullTrailer, PushSpec, ReadResult

if TYPE_CHECKING:
    from engine.files.live import LiveFiles
    from engine.files.offline import ExportProgress


def entries(found: list[Entry]) -> pb.FileListReply:
    return pb.FileListReply(
        entries=[
            pb.FileEntry(
                path=e.path,
                type=e.type,
                size=e.size,
                mode=e.mode,
                mtime=e.mtime,
                link_target=e.link_target,
            )
            for e in found
        ]
    )


def read_reply(result: ReadResult) -> pb.FileReadReply:
    return pb.FileReadReply(
        data=result.data, size=result.size, truncated=result.truncated, mode=result.mode,
        mtime=result.mtime,
    )  # fmt: skip


async def push(files: LiveFiles, requests: AsyncIterator[pb.PushInput]) -> pb.PushReply:
    first = await anext(aiter(requests), None)
    if first is None or first.WhichOneof("kind") != "start":
        raise invalid("push stream must begin with a start message", "upgrade the client")
    start = first.start
    spec = PushSpec(
        dest=start.dest, format=start.format or "tar", mode=start.mode,
        total_bytes=start.total_bytes, files=start.files,
    )  # fmt: skip

    async def items() -> AsyncIterator[bytes | dict[str, str]]:
        async for message in requests:
            kind = message.WhichOneof("kind")
            if kind == "data":
                yield message.data
            elif kind == "commit":
                yield dict(message.commit.sha256)
                return

    result = await files.push(start.sandbox, spec, items())
    return pb.PushReply(
        dest=result.dest, bytes=result.bytes, files=result.files,
        directories=result.directories, duration_ms=result.duration_ms,
    )  # fmt: skip


async def pull(files: LiveFiles, request: pb.FilePullRequest) -> AsyncIterator[pb.FilePullOutput]:
    async for item in files.pull(request.sandbox, request.path):
        if isinstance(item, bytes):
            yield pb.FilePullOutput(data=item)
        elif isinstance(item, PullHeader):
            header = pb.FilePullHeader(
                type=item.type, size=item.size, mode=item.mode, files=item.files
            )
            yield pb.FilePullOutput(header=header)
        elif isinstance(item, PullTrailer):
            trailer = pb.FilePullTrailer(sha256=item.sha256, bytes=item.bytes)
            yield pb.FilePullOutput(trailer=trailer)


def export_output(item: ExportProgress | bytes) -> pb.DiskExportOutput:
    if isinstance(item, bytes):
        return pb.DiskExportOutput(data=item)
    if item.stage == "header":
        header = pb.DiskExportHeader(
            format=item.format, size=item.size, virtual_size=item.virtual_size
        )
        return pb.DiskExportOutput(header=header)
    return pb.DiskExportOutput(
        progress=pb.DiskExportProgress(percent=item.percent, stage=item.stage)
    )
