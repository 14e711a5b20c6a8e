"""grove file ls|read|write, grove push, grove pull, grove patch, grove disk ls|read|export.

Everything that can be checked here (guest paths, modes, sizes, local sources) is checked
before the engine is asked, so bad input fails fast with the same cause + remedy the engine
would give.
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from engine.cli.context import Context
from engine.cli.output import emit_json, iec, table
from engine.cli.transfer_bar import transfer_bar
from engine.client import pushplan
from engine.client.models import FileEntry, FileRead
from engine.errors import GroveError, invalid
from engine.files.limits import guest_path, read_size

T = TypeVar("T")
EXIT_INTERRUPTED = 130
TYPE_MARK = {"file": "file", "directory": "dir", "symlink": "link"}


def register(verbs: argparse._SubParsersAction[Any], verb: Any) -> None:
    files = _subparsers(verbs, "file", "files of a running sandbox")
    _ls_and_read(files, verb, "id", (file_ls, "list a guest path: file ls ID PATH"),
                 (file_read, "print a guest file (first 64 KiB unless --max-bytes)"))  # fmt: skip
    p = verb(files, "write", file_write, "write a guest file: --text T, --from LOCAL or -")
    _target(p, "id")
    p.add_argument("source", nargs="?", choices=["-"], help="- reads the content from stdin")
    p.add_argument("--text", help="the content, as text")
    p.add_argument("--from", dest="from_", metavar="LOCAL", help="the content of a local file")
    p.add_argument("--mode", default="644", help="octal file mode (default 644)")

    p = verb(verbs, "push", push, "copy a local file, directory or tar into a sandbox")
    p.add_argument("id")
    p.add_argument("local", help="local file, directory or .tar/.tar.gz")
    p.add_argument("--dest", help="guest path (default /root/NAME)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="leave out matching names or paths (repeat)")  # fmt: skip
    p.add_argument("--no-ignore", action="store_true", help="push what .gitignore ignores too")
    p = verb(verbs, "pull", pull, "copy a guest file or directory out of a sandbox")
    p.add_argument("id")
    p.add_argument("path", help="absolute guest path")
    p.add_argument("-o", "--output", required=True, metavar="LOCAL",
                   help="local file or directory (a file into one keeps its name)")  # fmt: skip
    p.add_argument("--tar", action="store_true", help="keep a directory as a tar at LOCAL")
    p.add_argument("--force", action="store_true", help="replace a file, merge into a tree")
    p = verb(verbs, "patch", patch, "apply a unified diff to a sandbox's files")
    p.add_argument("id")
    p.add_argument("source", nargs="?", choices=["-"], help="- reads the patch from stdin")
    p.add_argument("--file", metavar="PATCH", help="the patch file")
    p.add_argument("--dry-run", action="store_true", help="check that it applies; write nothing")

    disks = _subparsers(verbs, "disk", "the disk of a stopped sandbox or a snapshot, offline")
    _ls_and_read(disks, verb, "target", (disk_ls, "list a path on the disk: disk ls TARGET PATH"),
                 (disk_read, "print a file from the disk"))  # fmt: skip
    p = verb(disks, "export", disk_export, "flatten the disk chain into one image file")
    p.add_argument("target", help="a stopped sandbox or a snapshot name")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="disk.qcow2 or disk.raw")
    p.add_argument("--format", choices=["qcow2", "raw"], help="default: from the extension")


def _ls_and_read(
    parent: Any, verb: Any, target: str, ls: tuple[Any, str], read: tuple[Any, str]
) -> None:
    """ls and read, the same for a running sandbox (file) and an offline disk (disk)."""
    p = verb(parent, "ls", ls[0], ls[1], ("list",))
    _target(p, target)
    p.add_argument("--recursive", "-R", action="store_true", help="the whole tree under PATH")
    p = verb(parent, "read", read[0], read[1])
    _target(p, target)
    _read_opts(p)


def _subparsers(verbs: argparse._SubParsersAction[Any], name: str, help_: str) -> Any:
    parser = verbs.add_parser(name, help=help_)
    return parser.add_subparsers(
        dest="sub", metavar="ACTION", required=True, parser_class=type(parser)
    )


def _target(p: argparse.ArgumentParser, name: str) -> None:
    help_ = "sandbox id or name" if name == "id" else "a stopped sandbox or a snapshot name"
    p.add_argument(name, help=help_)
    p.add_argument("path", help="absolute guest path")


def _read_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-bytes", type=int, default=0, help="read at most N bytes (default 64 KiB)")
    p.add_argument("--content-only", action="store_true", help="the raw bytes only, to stdout")


def interruptible(call: Callable[[], T]) -> T | None:
    """Run a transfer; Ctrl+C cancels it (the client aborts it, nothing is kept) → None."""
    try:
        return call()
    except KeyboardInterrupt:
        print("grove: interrupted; nothing was changed", file=sys.stderr, flush=True)
        return None


# -- listing and reading ---------------------------------------------------------------------


def entry_json(e: FileEntry) -> dict[str, Any]:
    return {
        "path": e.path, "type": e.type, "size": e.size, "mode": e.mode, "mtime": e.mtime,
        "link_target": e.link_target,
    }  # fmt: skip


def entry_rows(entries: list[FileEntry]) -> list[list[str]]:
    rows = []
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.mtime))
        name = e.path + (f" -> {e.link_target}" if e.link_target else "")
        size = iec(e.size) if e.type == "file" else ""
        rows.append([TYPE_MARK.get(e.type, e.type), f"{e.mode & 0o7777:04o}", size, when, name])
    return rows


def _print_entries(ctx: Context, entries: list[FileEntry]) -> int:
    if ctx.json:
        emit_json([entry_json(e) for e in entries])
    elif entries:
        print(table(["TYPE", "MODE", "SIZE", "MODIFIED", "PATH"], entry_rows(entries)))
    return 0


def read_json(read: FileRead) -> dict[str, Any]:
    out: dict[str, Any] = {
        "path": read.path, "size": read.size, "truncated": read.truncated,
        "mode": read.mode, "mtime": read.mtime,
    }  # fmt: skip
    try:
        out["content"], out["encoding"] = read.data.decode(), "utf-8"
    except UnicodeDecodeError:
        out["content"], out["encoding"] = base64.b64encode(read.data).decode(), "base64"
    return out


def _print_read(ctx: Context, read: FileRead) -> int:
    if ctx.json:
        emit_json(read_json(read))
        return 0
    if ctx.args.content_only:
        sys.stdout.buffer.write(read.data)
        sys.stdout.buffer.flush()
    else:
        text = read.data.decode(errors="replace")
        sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
        sys.stdout.flush()
    if read.truncated:
        print(
            f"grove: showing {len(read.data)} of {read.size} bytes; pass --max-bytes N for"
            " more (up to 1 MiB), or use 'grove pull' for the whole file",
            file=sys.stderr,
        )
    return 0


def file_ls(ctx: Context) -> int:
    return _ls(ctx, ctx.args.id, lambda: ctx.client.file_list)


def file_read(ctx: Context) -> int:
    return _read(ctx, ctx.args.id, lambda: ctx.client.file_read)


def disk_ls(ctx: Context) -> int:
    return _ls(ctx, ctx.args.target, lambda: ctx.client.disk_list)


def disk_read(ctx: Context) -> int:
    return _read(ctx, ctx.args.target, lambda: ctx.client.disk_read)


# The client is reached only after the input was checked (a bad path never dials the engine).
def _ls(ctx: Context, target: str, lister: Callable[[], Callable[..., list[FileEntry]]]) -> int:
    a = ctx.args
    guest_path(a.path)
    return _print_entries(ctx, lister()(target, a.path, recursive=a.recursive))


def _read(ctx: Context, target: str, reader: Callable[[], Callable[..., FileRead]]) -> int:
    a = ctx.args
    guest_path(a.path)
    size = read_size(a.max_bytes)
    return _print_read(ctx, reader()(target, a.path, max_bytes=size))


# -- writing ---------------------------------------------------------------------------------


def parse_mode(text: str) -> int:
    try:
        mode = int(text.strip(), 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise invalid(f"invalid --mode {text!r}", "pass an octal mode such as 644 or 0755")
    return mode


def _local_file(path: str, flag: str) -> bytes:
    local = Path(path)
    if not local.is_file():
        missing = not (local.exists() or local.is_symlink())
        raise GroveError(
            "local_not_found" if missing else "local_not_a_file",
            f"local file '{local}' does not exist" if missing else f"'{local}' is not a file",
            f"pass an existing file to {flag}",
        )
    return local.read_bytes()


def write_content(a: argparse.Namespace) -> bytes:
    """The content of file write from exactly one of --text, --from and -."""
    given = [name for name, value in (("--text", a.text), ("--from", a.from_), ("-", a.source))
             if value is not None]  # fmt: skip
    if len(given) != 1:
        got = f" (got {' and '.join(given)})" if given else ""
        raise invalid(
            f"file write needs exactly one source{got}",
            "pass --text TEXT, --from LOCAL_FILE, or - to read stdin",
        )
    if a.text is not None:
        return str(a.text).encode()
    if a.from_ is not None:
        return _local_file(a.from_, "--from")
    return sys.stdin.buffer.read()


def file_write(ctx: Context) -> int:
    a = ctx.args
    guest_path(a.path)
    mode = parse_mode(a.mode)
    data = write_content(a)
    result = ctx.client.file_write(a.id, a.path, data, mode=mode)
    if ctx.json:
        emit_json(result.to_json())
    else:
        print(f"wrote {iec(len(data))} to {result.dest or a.path}")
    return 0


# -- push and pull ---------------------------------------------------------------------------


def default_dest(local: str) -> str:
    """/root/NAME: a tar unpacks into its name without the suffix."""
    name = Path(local).resolve().name or "root"
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return f"/root/{name}"


def _rate(size: int, duration_ms: float) -> str:
    seconds = max(duration_ms / 1000, 1e-6)
    return f"in {seconds:.1f}s ({iec(size / seconds)}/s)"


def push(ctx: Context) -> int:
    a = ctx.args
    local = Path(a.local)
    pushplan.source_stat(local)  # a missing source fails before the engine is dialed
    dest = a.dest or default_dest(a.local)
    guest_path(dest, "destination")
    with transfer_bar(f"push {a.local} → {dest}", not ctx.json) as bar:
        result = interruptible(lambda: ctx.client.push_files(
            a.id, local, dest, exclude=a.exclude, ignore=not a.no_ignore, progress=bar
        ))  # fmt: skip
    if result is None:
        return EXIT_INTERRUPTED
    if ctx.json:
        emit_json(result.to_json())
        return 0
    skipped = f", {result.excluded} left out" if result.excluded else ""
    print(
        f"pushed {result.files} file(s), {iec(result.bytes)} to {result.dest} "
        f"{_rate(result.bytes, result.duration_ms)}{skipped}"
    )
    return 0


def pull(ctx: Context) -> int:
    a = ctx.args
    guest_path(a.path)
    with transfer_bar(f"pull {a.path} → {a.output}", not ctx.json) as bar:
        result = interruptible(lambda: ctx.client.pull_files(
            a.id, a.path, a.output, as_tar=a.tar, force=a.force, progress=bar
        ))  # fmt: skip
    if result is None:
        return EXIT_INTERRUPTED
    if ctx.json:
        emit_json(result.to_json())
        return 0
    print(
        f"pulled {result.files} file(s), {iec(result.bytes)} to {result.output} "
        f"{_rate(result.bytes, result.duration_ms)}"
    )
    return 0


# -- patch -----------------------------------------------------------------------------------


def patch_text(a: argparse.Namespace) -> str:
    if (a.file is None) == (a.source is None):
        raise invalid(
            "patch needs exactly one source", "pass --file PATCH, or - to read the patch from stdin"
        )
    raw = _local_file(a.file, "--file") if a.file is not None else sys.stdin.buffer.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise GroveError(
            "bad_patch",
            "bad patch: it is not UTF-8 text",
            "pass a text unified diff (grove sandbox diff); push binary files instead",
        ) from None


def patch(ctx: Context) -> int:
    a = ctx.args
    text = patch_text(a)
    result = ctx.client.apply_patch(a.id, text, dry_run=a.dry_run)
    if ctx.json:
        emit_json(
            {
                "added": list(result.added),
                "modified": list(result.modified),
                "deleted": list(result.deleted),
                "dry_run": result.dry_run,
            }
        )
        return 0
    for mark, paths in (("A", result.added), ("M", result.modified), ("D", result.deleted)):
        for path in paths:
            print(f"{mark} {path}")
    verb = "would change" if a.dry_run else "changed"
    counts = f"{len(result.added)} added, {len(result.modified)} modified, "
    print(f"{verb}: {counts}{len(result.deleted)} deleted")
    return 0


# -- offline disk export ---------------------------------------------------------------------


def export_format(output: str, given: str | None) -> str:
    if given:
        return given
    suffix = Path(output).suffix.lower()
    if suffix == ".qcow2":
        return "qcow2"
    if suffix in (".raw", ".img"):
        return "raw"
    raise invalid(
        f"cannot tell the image format of '{output}'",
        "name it .qcow2, .raw or .img, or pass --format qcow2|raw",
    )


def disk_export(ctx: Context) -> int:
    a = ctx.args
    fmt = export_format(a.output, a.format)
    with transfer_bar(f"export {a.target} → {a.output}", not ctx.json) as bar:
        result = interruptible(
            lambda: ctx.client.disk_export(a.target, a.output, fmt=fmt, progress=bar)
        )
    if result is None:
        return EXIT_INTERRUPTED
    if ctx.json:
        emit_json(result.to_json())
        return 0
    print(
        f"exported {a.target} as {fmt}: {iec(result.bytes)} on disk, "
        f"{iec(result.virtual_size)} virtual, to {result.output}"
    )
    return 0
