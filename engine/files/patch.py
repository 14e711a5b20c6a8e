"""Unified text diffs: parse, plan against the current files, and write them.

A patch is planned whole before anything is written: every added file must be absent, every
modified or deleted one present, and every hunk must apply (at its line or at the nearest
offset where its context matches exactly, never with fuzz). Only then does the caller write
each file, atomically per file. Binary patches, renames and mode changes are refused with a
cause: a patch here is for text sources, and git's extended headers would otherwise be
silently half-applied.

Paths follow ``grove sandbox diff``: ``a/srv/x`` and ``b/srv/x`` name the guest path
``/srv/x``; ``/dev/null`` marks an added or deleted file.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from engine.errors import GroveError

NO_NEWLINE = "\\ No newline at end of file"
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_REMEDY = "make the patch with 'grove sandbox diff ID' or 'diff -u' / 'git diff'"


@dataclass(frozen=True)
class HunkLine:
    tag: str  # ' ' context, '-' removed, '+' added
    text: bytes  # with its newline, unless the file ends without one here


@dataclass(frozen=True)
class Hunk:
    old_start: int
    old_len: int
    new_start: int
    new_len: int
    lines: tuple[HunkLine, ...]

    def old(self) -> list[bytes]:
        return [line.text for line in self.lines if line.tag != "+"]

    def new(self) -> list[bytes]:
        return [line.text for line in self.lines if line.tag != "-"]


@dataclass(frozen=True)
class FilePatch:
    path: str  # absolute guest path
    op: str  # add | modify | delete
    hunks: tuple[Hunk, ...] = field(default=())


@dataclass(frozen=True)
class Planned:
    path: str
    op: str  # add | modify | delete
    content: bytes | None  # None: delete


def _bad(message: str) -> GroveError:
    return GroveError("bad_patch", f"bad patch: {message}", _REMEDY)


def _guest_path(raw: str, line_no: int) -> str | None:
    name = raw.split("\t", 1)[0].rstrip("\r\n")
    if name.startswith('"') and name.endswith('"') and len(name) > 1:
        name = name[1:-1]
    if name == "/dev/null":
        return None
    if name.startswith(("a/", "b/")):
        name = name[1:]
    if not name.startswith("/"):
        name = "/" + name
    parts = name.split("/")
    if ".." in parts or "\0" in name or name == "/":
        raise _bad(f"line {line_no}: unsafe path {raw.strip()!r}")
    return "/" + "/".join(p for p in parts if p not in ("", "."))


def _refuse_extended(line: str, line_no: int) -> None:
    """git's extended headers this applier cannot honour, refused before anything is read."""
    if line.startswith("GIT binary patch") or (
        line.startswith("Binary files ") and line.rstrip().endswith(" differ")
    ):
        raise GroveError(
            "patch_binary",
            f"binary patches are not supported (line {line_no})",
            "push binary files with 'grove push' or 'grove file write'",
        )
    if line.startswith(("rename from ", "rename to ", "copy from ", "copy to ", "similarity ")):
        raise GroveError(
            "patch_rename",
            f"renames and copies are not supported (line {line_no}: {line.strip()})",
            "make the patch without rename detection (git diff --no-renames)",
        )
    if line.startswith(("old mode ", "new mode ")):
        raise GroveError(
            "patch_mode",
            f"mode changes are not supported (line {line_no}: {line.strip()})",
            "change modes with 'grove sandbox exec ID -- chmod'",
        )


def parse(text: str) -> list[FilePatch]:
    """Every file section of a unified diff; text around them (commit messages, grove's
    summary lines) is ignored, as patch(1) does."""
    lines = _split(text)
    found: list[FilePatch] = []
    seen: set[str] = set()
    i = 0
    while i < len(lines):
        line = lines[i]
        _refuse_extended(line, i + 1)
        if not (line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ ")):
            i += 1
            continue
        old = _guest_path(line[4:], i + 1)
        new = _guest_path(lines[i + 1][4:], i + 2)
        if old is not None and new is not None and old != new:
            raise GroveError(
                "patch_rename",
                f"renames are not supported ({old} -> {new}, line {i + 1})",
                "make the patch without rename detection (git diff --no-renames)",
            )
        path = new if new is not None else old
        if path is None:
            raise _bad(f"line {i + 1}: both sides are /dev/null")
        if path in seen:
            raise _bad(f"{path} appears twice")
        seen.add(path)
        op = "add" if old is None else "delete" if new is None else "modify"
        i += 2
        hunks: list[Hunk] = []
        while i < len(lines) and lines[i].startswith("@@"):
            hunk, i = _hunk(lines, i)
            hunks.append(hunk)
        if op == "add" and any(h.old_len for h in hunks):
            raise _bad(f"{path} is added but its hunks remove lines")
        if op == "delete" and any(h.new_len for h in hunks):
            raise _bad(f"{path} is deleted but its hunks add lines")
        found.append(FilePatch(path, op, tuple(hunks)))
    if not found:
        raise _bad("no file changes found (expected '--- a/PATH' and '+++ b/PATH' lines)")
    return found


def _hunk(lines: list[str], i: int) -> tuple[Hunk, int]:
    header = _HUNK.match(lines[i])
    if header is None:
        raise _bad(f"line {i + 1}: malformed hunk header {lines[i].strip()!r}")
    old_start, old_len = int(header[1]), int(header[2] if header[2] is not None else 1)
    new_start, new_len = int(header[3]), int(header[4] if header[4] is not None else 1)
    i += 1
    body: list[HunkLine] = []
    old_seen = new_seen = 0
    while old_seen < old_len or new_seen < new_len:
        if i >= len(lines):
            raise _bad(f"hunk at line {i} ends early (the patch is truncated)")
        line = lines[i]
        tag, rest = (line[0], line[1:]) if line not in ("\n", "\r\n") else (" ", line)
        if tag not in " -+":
            raise _bad(f"line {i + 1}: expected a hunk line, got {line.strip()[:40]!r}")
        if tag != "+":
            old_seen += 1
        if tag != "-":
            new_seen += 1
        body.append(HunkLine(tag, rest.encode("utf-8", "surrogateescape")))
        i += 1
        if i < len(lines) and lines[i].startswith("\\"):
            last = body[-1]
            body[-1] = HunkLine(last.tag, last.text.removesuffix(b"\n"))
            i += 1
    if old_seen != old_len or new_seen != new_len:
        raise _bad(f"line {i}: hunk line counts do not match its header")
    return Hunk(old_start, old_len, new_start, new_len, tuple(body)), i


def paths(patches: Iterable[FilePatch]) -> list[str]:
    return [p.path for p in patches]


def _conflict(message: str) -> GroveError:
    return GroveError(
        "patch_conflict",
        f"the patch does not apply: {message}; nothing was written",
        "diff against the sandbox's current files (grove file read ID PATH) and retry",
    )


def _split(text: str) -> list[str]:
    """Lines split at '\n' only (str.splitlines would also split at form feeds and more)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    return [*lines, parts[-1]] if parts[-1] else lines


def _split_bytes(data: bytes) -> list[bytes]:
    parts = data.split(b"\n")
    lines = [part + b"\n" for part in parts[:-1]]
    return [*lines, parts[-1]] if parts[-1] else lines


def _find(lines: list[bytes], want: list[bytes], guess: int, low: int) -> int:
    """Where want matches lines exactly at or after low, nearest to guess; -1 when nowhere."""
    limit = len(lines) - len(want)
    for offset in range(max(guess - low, limit - guess, 0) + 1):
        for at in (guess - offset, guess + offset) if offset else (guess,):
            if low <= at <= limit and lines[at : at + len(want)] == want:
                return at
    return -1


def _apply(patch: FilePatch, content: bytes) -> bytes:
    lines = _split_bytes(content)
    out: list[bytes] = []
    pos = 0  # next unconsumed line of the original
    delta = 0  # how far earlier hunks moved the text
    for n, hunk in enumerate(patch.hunks, 1):
        want = hunk.old()
        guess = max(hunk.old_start - 1 if hunk.old_len else hunk.old_start, 0) + delta
        at = _find(lines, want, min(max(guess, pos), len(lines)), pos)
        if at < 0:
            near = f"line {hunk.old_start}"
            raise _conflict(f"hunk {n} of {patch.path} does not match the file near {near}")
        out.extend(lines[pos:at])
        out.extend(hunk.new())
        pos = at + len(want)
        delta = at - (hunk.old_start - 1 if hunk.old_len else hunk.old_start)
    out.extend(lines[pos:])
    return b"".join(out)


def plan(patches: Iterable[FilePatch], current: Mapping[str, bytes | None]) -> list[Planned]:
    """What to write for each file, from its current content (None: it does not exist)."""
    planned: list[Planned] = []
    for patch in patches:
        content = current.get(patch.path)
        if patch.op == "add":
            if content is not None:
                raise _conflict(f"{patch.path} is added by the patch but already exists")
            planned.append(Planned(patch.path, "add", _apply(patch, b"")))
            continue
        if content is None:
            raise _conflict(f"{patch.path} does not exist")
        result = _apply(patch, content)
        if patch.op == "delete":
            if result:
                raise _conflict(f"{patch.path} differs from the content the patch deletes")
            planned.append(Planned(patch.path, "delete", None))
        else:
            planned.append(Planned(patch.path, "modify", result))
    return planned


def unified(path: str, before: bytes | None, after: bytes | None) -> str:
    """A unified diff of one file (None: absent on that side) that ``parse`` reads back,
    including files without a final newline; "" for binary content."""
    if any(side is not None and _binary(side) for side in (before, after)):
        return ""
    old = _split((before or b"").decode())
    new = _split((after or b"").decode())
    head = (
        f"--- {'/dev/null' if before is None else 'a' + path}\n"
        f"+++ {'/dev/null' if after is None else 'b' + path}\n"
    )
    body = list(difflib.unified_diff(old, new, n=3))[2:]  # its own ---/+++ lines dropped
    if not body and not (before is None or after is None):
        return ""
    text = [head]
    for line in body:
        text.append(line if line.endswith("\n") else f"{line}\n{NO_NEWLINE}\n")
    return "".join(text)


def _binary(data: bytes) -> bool:
    if b"\0" in data:
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return True
    return False
