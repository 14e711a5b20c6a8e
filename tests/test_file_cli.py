"""The file verbs' own checks: bad input fails before the engine is asked (no VM, no engine)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from engine.cli import file_cmds
from engine.cli.context import Context
from engine.cli.main import build_parser, main
from engine.cli.transfer_bar import TransferBar, amount, transfer_bar
from engine.client.models import FileEntry, FileRead, TransferProgress


@pytest.fixture(autouse=True)
def no_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Any call that reaches for the engine fails the test."""

    def client(_self: Context) -> Any:
        raise AssertionError("the engine was asked")

    monkeypatch.setenv("GROVE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GROVE_HOST", raising=False)
    monkeypatch.setattr(Context, "client", property(client))


def error(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, str]:
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    assert code == 1, out
    found = json.loads(out)["error"]
    assert found["message"] and found["remedy"], found
    return dict(found)


def test_parsing() -> None:
    parser = build_parser()
    a = parser.parse_args(["file", "ls", "sb-1", "/root", "-R"])
    assert (a.sub, a.id, a.path, a.recursive) == ("ls", "sb-1", "/root", True)
    a = parser.parse_args(["file", "write", "sb-1", "/root/x", "-"])
    assert a.source == "-" and a.text is None and a.from_ is None and a.mode == "644"
    a = parser.parse_args(["push", "sb-1", "./proj", "--exclude", "a", "--exclude", "b/c"])
    assert a.exclude == ["a", "b/c"] and a.dest is None and not a.no_ignore
    a = parser.parse_args(["pull", "sb-1", "/root/out", "-o", "out", "--tar", "--force"])
    assert (a.output, a.tar, a.force) == ("out", True, True)
    a = parser.parse_args(["patch", "sb-1", "--file", "p.diff", "--dry-run"])
    assert a.file == "p.diff" and a.source is None and a.dry_run
    a = parser.parse_args(["disk", "export", "snap", "-o", "d.img", "--format", "raw"])
    assert (a.target, a.output, a.format) == ("snap", "d.img", "raw")
    a = parser.parse_args(["disk", "read", "snap", "/etc/hostname", "--max-bytes", "5"])
    assert a.max_bytes == 5 and not a.content_only


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["file", "read", "sb-1", "etc/hostname"], "invalid_argument"),
        (["file", "ls", "sb-1", "root"], "invalid_argument"),
        (["disk", "ls", "snap", "relative/path"], "invalid_argument"),
        (["file", "read", "sb-1", "/etc/hostname", "--max-bytes", "-1"], "invalid_argument"),
        (["file", "read", "sb-1", "/big", "--max-bytes", str(2 * 1024 * 1024)], "read_too_large"),
        (["file", "read", "sb-1", "/x", "--max-bytes", "lots"], "usage"),
        (["file", "write", "sb-1", "/x", "--text", "a", "--mode", "9"], "invalid_argument"),
        (["file", "write", "sb-1", "/x", "--text", "a", "--mode", "rw"], "invalid_argument"),
        (["file", "write", "sb-1", "/x", "--text", "a", "--mode", "17777"], "invalid_argument"),
        (["file", "write", "sb-1", "/x", "--text", "a", "--from", "f"], "invalid_argument"),
        (["file", "write", "sb-1", "/x", "-", "--text", "a"], "invalid_argument"),
        (["file", "write", "sb-1", "/x"], "invalid_argument"),
        (["file", "write", "sb-1", "x", "--text", "a"], "invalid_argument"),
        (["push", "sb-1", "/no/such/local/source"], "local_not_found"),
        (["pull", "sb-1", "root/out", "-o", "out"], "invalid_argument"),
        (["patch", "sb-1"], "invalid_argument"),
        (["patch", "sb-1", "-", "--file", "p.diff"], "invalid_argument"),
        (["patch", "sb-1", "--file", "/no/such/patch"], "local_not_found"),
        (["disk", "export", "snap", "-o", "disk.bin"], "invalid_argument"),
        (["disk", "export", "snap", "-o", "d.qcow2", "--format", "vmdk"], "usage"),
    ],
)
def test_bad_input_fails_before_the_engine(
    capsys: pytest.CaptureFixture[str], argv: list[str], code: str
) -> None:
    assert error(capsys, *argv)["code"] == code


def test_missing_local_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    found = error(capsys, "file", "write", "sb-1", "/root/x", "--from", missing)
    assert found["code"] == "local_not_found" and missing in found["message"]
    assert error(capsys, "push", "sb-1", missing)["code"] == "local_not_found"
    assert error(capsys, "file", "write", "sb-1", "/x", "--from", str(tmp_path))["code"] == (
        "local_not_a_file"
    )
    assert error(capsys, "push", "sb-1", str(tmp_path), "--dest", "rel")["code"] == (
        "invalid_argument"
    )


def test_human_errors_have_a_cause_and_a_remedy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["file", "write", "sb-1", "/x", "--text", "a", "--mode", "888"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: invalid --mode '888'" and err[1].strip().startswith("remedy:")


def test_write_and_patch_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blob = bytes(range(256))
    (tmp_path / "blob").write_bytes(blob)
    args = build_parser().parse_args(
        ["file", "write", "sb", "/x", "--from", str(tmp_path / "blob")]
    )
    assert file_cmds.write_content(args) == blob
    args = build_parser().parse_args(["file", "write", "sb", "/x", "--text", "héllo"])
    assert file_cmds.write_content(args) == "héllo".encode()
    stdin = io.TextIOWrapper(io.BytesIO(b"\x00\xff raw"))
    monkeypatch.setattr("sys.stdin", stdin)
    args = build_parser().parse_args(["file", "write", "sb", "/x", "-"])
    assert file_cmds.write_content(args) == b"\x00\xff raw"
    (tmp_path / "p.diff").write_bytes(b"--- a/x\n+++ b/x\n")
    args = build_parser().parse_args(["patch", "sb", "--file", str(tmp_path / "p.diff")])
    assert file_cmds.patch_text(args) == "--- a/x\n+++ b/x\n"
    (tmp_path / "bin.diff").write_bytes(b"\xff\xfe")
    args = build_parser().parse_args(["patch", "sb", "--file", str(tmp_path / "bin.diff")])
    with pytest.raises(Exception, match="not UTF-8") as raised:
        file_cmds.patch_text(args)
    assert getattr(raised.value, "code", "") == "bad_patch"


def test_modes_destinations_and_formats() -> None:
    assert file_cmds.parse_mode("644") == 0o644
    assert file_cmds.parse_mode("0755") == 0o755
    assert file_cmds.parse_mode("0o600") == 0o600
    assert file_cmds.default_dest("/tmp/project/") == "/root/project"
    assert file_cmds.default_dest("/tmp/src.tar.gz") == "/root/src"
    assert file_cmds.default_dest("/tmp/notes.txt") == "/root/notes.txt"
    assert file_cmds.export_format("a/disk.QCOW2", None) == "qcow2"
    assert file_cmds.export_format("disk.img", None) == "raw"
    assert file_cmds.export_format("disk.bin", "qcow2") == "qcow2"


def test_listing_and_read_shapes() -> None:
    entries = [
        FileEntry("/root/d", "directory", 4096, 0o40755, 0.0),
        FileEntry("/root/d/f", "file", 2048, 0o100600, 0.0),
        FileEntry("/root/l", "symlink", 1, 0o120777, 0.0, link_target="/etc/hosts"),
    ]
    rows = file_cmds.entry_rows(entries)
    assert [r[0] for r in rows] == ["dir", "file", "link"]
    assert [r[1] for r in rows] == ["0755", "0600", "0777"]
    assert rows[0][2] == "" and rows[1][2] == "2.0 KiB"
    assert rows[2][4] == "/root/l -> /etc/hosts"
    assert set(file_cmds.entry_json(entries[2])) == {
        "path", "type", "size", "mode", "mtime", "link_target",
    }  # fmt: skip
    text = file_cmds.read_json(FileRead("/t", b"hi\n", 10, True, 0o644, 1.0))
    assert text["content"] == "hi\n" and text["encoding"] == "utf-8" and text["truncated"]
    binary = file_cmds.read_json(FileRead("/b", b"\xff\x00", 2, False, 0o644, 1.0))
    assert binary["encoding"] == "base64" and binary["content"] == "/wA="


def test_interrupt_says_nothing_changed(capsys: pytest.CaptureFixture[str]) -> None:
    def cancelled() -> int:
        raise KeyboardInterrupt

    assert file_cmds.interruptible(cancelled) is None
    assert "interrupted; nothing was changed" in capsys.readouterr().err
    assert file_cmds.interruptible(lambda: 7) == 7


def test_progress_amounts_and_quiet_off_a_terminal() -> None:
    assert amount(TransferProgress("planning"), 1.0) == ""
    assert amount(TransferProgress("converting", 2500, 10000), 1.0) == "25%"
    assert amount(TransferProgress("sending", 1024, 4096), 1.0) == "1.0 KiB / 4.0 KiB  1.0 KiB/s"
    assert amount(TransferProgress("receiving", 0, None), 0.0) == "0 B"
    assert amount(TransferProgress("verifying", 4096, 4096), 2.0) == "4.0 KiB / 4.0 KiB"
    # Under pytest stderr is no terminal: the bar only records the stages, draws nothing.
    with transfer_bar("push", enabled=True) as bar:
        for stage in ("planning", "sending", "sending", "done"):
            bar(TransferProgress(stage, 1, 2))
    assert isinstance(bar, TransferBar) and bar.stages == ["planning", "sending", "done"]
