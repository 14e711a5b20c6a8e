"""Unified diffs: what grove writes (unified) reads back (parse) and applies (plan), hunks
that move, and every refusal: conflicts, binary patches, renames, mode changes, bad input."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from engine.errors import GroveError
from engine.files.patch import parse, paths, plan, unified

BEFORE = b"".join(b"line %d\n" % i for i in range(1, 41))


def apply(text: str, current: dict[str, bytes | None]) -> dict[str, bytes | None]:
    out = dict(current)
    for item in plan(parse(text), current):
        out[item.path] = item.content
    return out


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (BEFORE, BEFORE.replace(b"line 3\n", b"three\n").replace(b"line 30\n", b"")),
        (b"x", b"y"),  # no final newline on either side
        (b"a\nb\n", b"a\nb"),  # the final newline goes away
        (b"a\fb\n", b"a\fc\n"),  # a form feed is not a line break
        (b"", b"new\n"),
    ],
)
def test_unified_reads_back_and_applies(before: bytes, after: bytes) -> None:
    text = unified("/srv/f", before, after)
    assert apply(text, {"/srv/f": before}) == {"/srv/f": after}


def test_added_and_deleted_files_round_trip() -> None:
    text = unified("/srv/new", None, b"fresh\n") + unified("/srv/old", b"gone\n", None)
    parsed = parse(text)
    assert paths(parsed) == ["/srv/new", "/srv/old"]
    result = apply(text, {"/srv/new": None, "/srv/old": b"gone\n"})
    assert result == {"/srv/new": b"fresh\n", "/srv/old": None}
    assert unified("/srv/empty", None, b"") != ""
    assert apply(unified("/srv/empty", None, b""), {"/srv/empty": None}) == {"/srv/empty": b""}


def test_a_hunk_applies_at_an_offset_when_lines_moved_above_it() -> None:
    after = BEFORE.replace(b"line 35\n", b"thirty-five\n")
    text = unified("/f", BEFORE, after)
    moved = b"inserted\n" * 5 + BEFORE
    assert apply(text, {"/f": moved})["/f"] == b"inserted\n" * 5 + after


@pytest.mark.skipif(shutil.which("diff") is None, reason="diffutils missing")
def test_gnu_diff_output_applies(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(BEFORE)
    (tmp_path / "b").write_bytes(BEFORE.replace(b"line 20\n", b"twenty\nmore\n"))
    out = subprocess.run(
        ["diff", "-u", "--label", "a/etc/x", "--label", "b/etc/x", "a", "b"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    assert apply(out, {"/etc/x": BEFORE})["/etc/x"] == (tmp_path / "b").read_bytes()


def code_of(text: str, current: dict[str, bytes | None]) -> str:
    with pytest.raises(GroveError) as caught:
        plan(parse(text), current)
    assert caught.value.remedy
    return caught.value.code


def test_conflicts_are_found_before_anything_is_planned() -> None:
    good = unified("/a", b"1\n", b"2\n")
    wrong = unified("/b", b"expected\n", b"new\n")
    assert code_of(good + wrong, {"/a": b"1\n", "/b": b"actual\n"}) == "patch_conflict"
    assert code_of(unified("/n", None, b"x\n"), {"/n": b"there\n"}) == "patch_conflict"
    assert code_of(good, {"/a": None}) == "patch_conflict"
    assert code_of(unified("/d", b"x\n", None), {"/d": b"other\n"}) == "patch_conflict"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("diff --git a/x b/x\nGIT binary patch\nliteral 0\n", "patch_binary"),
        ("Binary files a/x and b/x differ\n", "patch_binary"),
        ("diff --git a/x b/y\nsimilarity index 90%\nrename from x\nrename to y\n", "patch_rename"),
        ("--- a/x\n+++ b/y\n@@ -1 +1 @@\n-a\n+b\n", "patch_rename"),
        ("diff --git a/x b/x\nold mode 100644\nnew mode 100755\n", "patch_mode"),
        ("just some words\n", "bad_patch"),
        ("--- a/x\n+++ b/x\n@@ -1,3 +1,3 @@\n-a\n+b\n", "bad_patch"),
        ("--- a/../etc/x\n+++ b/../etc/x\n@@ -1 +1 @@\n-a\n+b\n", "bad_patch"),
    ],
)
def test_refusals_name_their_cause(text: str, code: str) -> None:
    with pytest.raises(GroveError) as caught:
        parse(text)
    assert caught.value.code == code
    assert caught.value.remedy


def test_binary_content_gets_no_patch() -> None:
    assert unified("/bin", b"\0\1", b"\0\2") == ""
    assert unified("/same", b"a\n", b"a\n") == ""
