"""Files of a running sandbox: read and write one file (core); push and pull a small tree
inline, as path -> content maps (full)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import tempfile
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from pydantic import Field

from engine.errors import GroveError, invalid
from engine.mcp.registry import Ctx, engine, tool
from engine.mcp.results import Encoding, FileContent, FileWritten, TreeFile, TreePulled, TreePushed
from engine.mcp.tools.common import SandboxRef

#: One file_write's content, and one tree push or pull in all: what fits in a tool call.
MAX_WRITE = 8 * 1024 * 1024
MAX_TREE = 1024 * 1024
MAX_TREE_FILES = 1000

GuestPath = Annotated[str, Field(min_length=1, description="an absolute path in the guest")]
Mode = Annotated[str, Field(pattern=r"^[0-7]{3,4}$", description="octal permission bits")]


def _encode(data: bytes, wanted: Literal["auto", "utf-8", "base64"]) -> tuple[str, Encoding]:
    if wanted != "base64":
        try:
            return data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            if wanted == "utf-8":
                raise invalid(
                    "the file is not UTF-8 text", "read it with encoding 'base64'"
                ) from None
    return base64.b64encode(data).decode("ascii"), "base64"


def _decode(content: str, encoding: Encoding, what: str) -> bytes:
    if encoding == "utf-8":
        return content.encode("utf-8")
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{what} is not valid base64", "encode the bytes as base64") from None


@tool("core", "Read a file", read_only=True, idempotent=True)
async def file_read(
    ctx: Ctx,
    sandbox: SandboxRef,
    path: GuestPath,
    max_bytes: Annotated[
        int, Field(ge=1, le=MAX_WRITE, description="read at most this many bytes")
    ] = 64 * 1024,
    encoding: Annotated[
        Literal["auto", "utf-8", "base64"],
        Field(description="auto: UTF-8 text when it is, base64 otherwise"),
    ] = "auto",
) -> FileContent:
    """The content of a file in a running sandbox (the first max_bytes; truncated says more)."""
    client = await engine(ctx)
    read = await client.files(sandbox).read(path, max_bytes)
    content, used = _encode(read.data, encoding)
    return FileContent(
        path=read.path, size=read.size, truncated=read.truncated, mode=read.mode,
        mtime=read.mtime, content=content, encoding=used,
    )  # fmt: skip


@tool("core", "Write a file", idempotent=True)
async def file_write(
    ctx: Ctx,
    sandbox: SandboxRef,
    path: GuestPath,
    content: Annotated[str, Field(description="the whole new content")],
    encoding: Annotated[
        Encoding, Field(description="how content is given: text, or base64 for bytes")
    ] = "utf-8",
    mode: Mode = "644",
) -> FileWritten:
    """Write a whole file in a running sandbox, atomically; missing parent directories are
    created."""
    data = _decode(content, encoding, "content")
    if len(data) > MAX_WRITE:
        raise invalid(
            f"content is {len(data)} bytes; one file_write takes at most {MAX_WRITE}",
            "split it, or copy large files with 'grove push'",
        )
    client = await engine(ctx)
    result = await client.files(sandbox).write(path, data, int(mode, 8))
    return FileWritten(path=result.dest or path, bytes=len(data), mode=mode)


def _relative(name: str) -> PurePosixPath:
    rel = PurePosixPath(name)
    if not name or rel.is_absolute() or ".." in rel.parts or str(rel) in (".", ""):
        raise invalid(
            f"invalid tree path '{name[:200]}'",
            "use paths relative to dest, without '..', e.g. src/main.py",
        )
    return rel


@tool("full", "Push a small tree of files")
async def tree_push(
    ctx: Ctx,
    sandbox: SandboxRef,
    dest: Annotated[str, Field(min_length=1, description="guest directory to write them under")],
    files: Annotated[
        dict[str, str],
        Field(description="relative path -> content; at most 1 MiB and 1000 files in all"),
    ],
    encoding: Annotated[
        Encoding, Field(description="how every content is given: text, or base64")
    ] = "utf-8",
) -> TreePushed:
    """Write several files under a guest directory in one atomic transfer (merged with what is
    there: other files stay). Parents are created."""
    if not files:
        raise invalid("no files given", "pass files as a map of relative path -> content")
    if len(files) > MAX_TREE_FILES:
        raise invalid(f"{len(files)} files given", f"push at most {MAX_TREE_FILES} per call")
    decoded = {_relative(name): _decode(text, encoding, name) for name, text in files.items()}
    total = sum(len(d) for d in decoded.values())
    if total > MAX_TREE:
        raise GroveError(
            "push_too_large",
            f"the files hold {total} bytes; one tree_push takes at most {MAX_TREE}",
            "split it into several calls, or copy large trees with 'grove push'",
        )
    client = await engine(ctx)
    with tempfile.TemporaryDirectory(prefix="grove-mcp-") as tmp:
        root = Path(tmp) / "tree"
        await asyncio.to_thread(_lay_out, root, decoded)
        result = await client.files(sandbox).push(root, dest, ignore=False)
    return TreePushed(
        sandbox=sandbox, dest=result.dest or dest, files=result.files, bytes=result.bytes,
        duration_ms=result.duration_ms,
    )  # fmt: skip


def _lay_out(root: Path, files: dict[PurePosixPath, bytes]) -> None:
    root.mkdir()
    for rel, data in files.items():
        target = root.joinpath(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


@tool("full", "Pull a small tree of files", read_only=True, idempotent=True)
async def tree_pull(
    ctx: Ctx,
    sandbox: SandboxRef,
    path: GuestPath,
    encoding: Annotated[
        Literal["auto", "utf-8", "base64"],
        Field(description="auto: each file as UTF-8 text when it is, base64 otherwise"),
    ] = "auto",
) -> TreePulled:
    """Every file under a guest directory (or one file), with its content: at most 1 MiB and
    1000 files in all, checked before anything moves."""
    client = await engine(ctx)
    files = client.files(sandbox)
    entries = await files.list(path, recursive=True)
    regular = [e for e in entries if e.type == "file"]
    total = sum(e.size for e in regular)
    if total > MAX_TREE or len(regular) > MAX_TREE_FILES:
        raise GroveError(
            "pull_too_large",
            f"{path} holds {len(regular)} files, {total} bytes; one tree_pull takes at most "
            f"{MAX_TREE_FILES} files, {MAX_TREE} bytes",
            "pull a subdirectory, read single files with file_read, or use 'grove pull'",
        )
    kind: Literal["file", "directory"] = "directory"
    if len(entries) == 1 and entries[0].type == "file" and entries[0].path == path:
        kind = "file"  # a directory's entries are named below it, never as the path itself
    with tempfile.TemporaryDirectory(prefix="grove-mcp-") as tmp:
        out = Path(tmp) / "tree"
        await files.pull(path, out)
        found = await asyncio.to_thread(_read_tree, out, kind, PurePosixPath(path).name)
    listed: list[TreeFile] = []
    for rel, data, mode in found:
        content, used = _encode(data, encoding)
        listed.append(TreeFile(path=rel, content=content, encoding=used, size=len(data),
                               mode=f"{mode & 0o7777:o}"))  # fmt: skip
    return TreePulled(
        sandbox=sandbox, path=path, type=kind, files=listed,
        bytes=sum(f.size for f in listed),
    )  # fmt: skip


def _read_tree(out: Path, kind: str, name: str) -> list[tuple[str, bytes, int]]:
    if kind == "file":
        return [(name, out.read_bytes(), out.stat().st_mode)]
    found = []
    for item in sorted(out.rglob("*")):
        if item.is_file() and not item.is_symlink():
            found.append((item.relative_to(out).as_posix(), item.read_bytes(), item.stat().st_mode))
    return found
