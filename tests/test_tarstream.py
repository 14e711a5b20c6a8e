"""The tar codec both ends of a push or pull use: round trips, interop with Python's tarfile
and GNU tar, names that must never be unpacked, and streams that end too early."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from guest.tarstream import (
    Finished,
    Member,
    TarError,
    TarExtractor,
    TarReader,
    TreePacker,
    encode_header,
    padding,
    safe_relpath,
    walk,
)

LONG = "d" * 80 + "/" + "é" * 70 + ".txt"


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"alpha\n",
        "sub/b.bin": os.urandom(70_000),
        "sub/empty": b"",
        LONG: b"long and non-ASCII name\n",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "sub" / "run.sh").write_bytes(b"#!/bin/sh\n")
    (root / "sub" / "run.sh").chmod(0o755)
    files["sub/run.sh"] = b"#!/bin/sh\n"
    (root / "link").symlink_to("sub/" + "t" * 120)
    return files


def pack(root: Path) -> tuple[bytes, dict[str, str]]:
    packer = TreePacker(str(root), [Member("", "directory", mode=0o755), *walk(str(root))])
    out = bytearray()
    while chunk := packer.read(7_919):  # an odd size crosses every block boundary
        out += chunk
    return bytes(out), packer.hashes


def unpack(stream: bytes, staging: Path, dest: Path, chunk: int = 1_000) -> dict[str, str]:
    extractor = TarExtractor(str(staging))
    for i in range(0, len(stream), chunk):
        extractor.feed(stream[i : i + chunk])
    writer = extractor.finish()
    writer.commit(str(dest), merge=True)
    return writer.hashes


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_round_trip_keeps_contents_modes_symlinks_and_long_names(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src)
    stream, hashes = pack(src)
    assert hashes == {rel: sha(data) for rel, data in files.items()}
    hashes_out = unpack(stream, tmp_path / "stage", tmp_path / "out")
    assert hashes_out == hashes
    for rel, data in files.items():
        assert (tmp_path / "out" / rel).read_bytes() == data
    assert os.readlink(tmp_path / "out" / "link") == "sub/" + "t" * 120
    assert (tmp_path / "out" / "sub" / "run.sh").stat().st_mode & 0o777 == 0o755
    assert not (tmp_path / "stage").exists()


def test_python_tarfile_reads_our_stream_and_we_read_gnu_and_pax_tars(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src)
    stream, _ = pack(src)
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
        names = {m.name.removeprefix("./") for m in tar.getmembers() if m.isfile()}
        assert names == set(files)
        member = tar.extractfile(LONG)
        assert member is not None and member.read() == files[LONG]
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
            tar.add(src, arcname=".")
        dest = tmp_path / f"out-{fmt}"
        got = unpack(buf.getvalue(), tmp_path / f"stage-{fmt}", dest)
        assert got == {rel: sha(data) for rel, data in files.items()}


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar is not installed")
def test_gnu_tar_extracts_our_stream(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src)
    stream, _ = pack(src)
    out = tmp_path / "gnu"
    out.mkdir()
    subprocess.run(["tar", "-x", "-C", str(out)], input=stream, check=True)
    for rel, data in files.items():
        assert (out / rel).read_bytes() == data


@pytest.mark.parametrize("name", ["/etc/passwd", "../up", "a/../../up", "a\0b"])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(TarError) as caught:
        safe_relpath(name)
    assert caught.value.code == "unsafe_path"


def _tar_with(*members: tuple[Member, bytes]) -> bytes:
    out = b""
    for member, data in members:
        out += encode_header(member) + data + padding(len(data))
    return out + b"\0" * 1024


def test_nothing_is_written_through_a_symlink_member(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    stream = _tar_with(
        (Member("escape", "symlink", link_target=str(outside)), b""),
        (Member("escape/pwned", "file", size=3), b"bad"),
    )
    extractor = TarExtractor(str(tmp_path / "stage"))
    with pytest.raises(TarError) as caught:
        extractor.feed(stream)
    assert caught.value.code == "unsafe_path"
    extractor.abort()
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "stage").exists()


def test_hard_links_and_devices_are_refused_with_a_cause(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hard")
        info.type = tarfile.LNKTYPE
        info.linkname = "a"
        tar.addfile(info)
    with pytest.raises(TarError) as caught:
        TarReader().feed(buf.getvalue())
    assert caught.value.code == "unsupported_member"


def test_a_truncated_stream_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    stream, _ = pack(src)
    extractor = TarExtractor(str(tmp_path / "stage"))
    extractor.feed(stream[: len(stream) // 2])
    with pytest.raises(TarError) as caught:
        extractor.finish()
    assert caught.value.code == "truncated"
    assert not (tmp_path / "stage").exists()
    reader = TarReader()
    reader.feed(stream[:700])
    with pytest.raises(TarError):
        reader.close()


def test_a_damaged_header_is_not_mistaken_for_a_tar() -> None:
    with pytest.raises(TarError) as caught:
        TarReader().feed(b"this is not a tar" * 100)
    assert caught.value.code == "bad_archive"


def test_verify_names_the_file_whose_hash_differs_and_commit_merges(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    stream, hashes = pack(src)
    extractor = TarExtractor(str(tmp_path / "stage"))
    extractor.feed(stream)
    writer = extractor.finish()
    wrong = dict(hashes, **{"a.txt": sha(b"other")})
    with pytest.raises(TarError) as caught:
        writer.verify(wrong)
    assert caught.value.code == "checksum_mismatch" and caught.value.message == "a.txt"
    assert not (tmp_path / "stage").exists()
    dest = tmp_path / "dest"
    (dest / "sub").mkdir(parents=True)
    (dest / "keep.txt").write_text("kept")
    (dest / "a.txt").write_text("old")
    unpack(stream, tmp_path / "stage2", dest)
    assert (dest / "keep.txt").read_text() == "kept"
    assert (dest / "a.txt").read_bytes() == b"alpha\n"


def test_reader_events_carry_every_file_byte() -> None:
    data = os.urandom(5000)
    stream = _tar_with((Member("f", "file", size=len(data)), data))
    reader = TarReader()
    events = [e for i in range(0, len(stream), 333) for e in reader.feed(stream[i : i + 333])]
    members = [e for e in events if isinstance(e, Member)]
    assert [m.path for m in members] == ["f"]
    assert b"".join(e for e in events if isinstance(e, bytes)) == data
    assert isinstance(events[-1], Finished)
