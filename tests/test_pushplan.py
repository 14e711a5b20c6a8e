"""What a push sends, planned on this machine: a user's tar re-encoded member by member (and
unpacked by the guest's codec exactly), excludes, and sources that fail before anything is sent."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from engine.client import pushplan
from engine.errors import GroveError
from guest.tarstream import TarExtractor


def drain(packer: pushplan.Packer) -> bytes:
    out = bytearray()
    while chunk := packer.read(10_007):
        out += chunk
    return bytes(out)


def test_a_local_tar_is_repacked_hashed_and_unpacks_the_same(tmp_path: Path) -> None:
    files = {"a.txt": b"alpha\n", "dir/b.bin": bytes(range(256)) * 300}
    archive = tmp_path / "project.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    plan = pushplan.plan(archive)
    assert (plan.format, plan.files) == ("tar", 2)
    assert plan.total_bytes == sum(map(len, files.values()))
    packer = plan.packer()
    stream = drain(packer)
    assert packer.hashes == {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}
    extractor = TarExtractor(str(tmp_path / "stage"))
    extractor.feed(stream)
    writer = extractor.finish()
    writer.verify(packer.hashes)
    writer.commit(str(tmp_path / "out"), merge=False)
    for name, data in files.items():
        assert (tmp_path / "out" / name).read_bytes() == data


def test_excludes_and_limits_are_applied_before_sending(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "node_modules" / "x").mkdir(parents=True)
    (root / "node_modules" / "x" / "big").write_bytes(b"x" * 1000)
    (root / "src").mkdir()
    (root / "src" / "main.py").write_bytes(b"print()\n")
    plan = pushplan.plan(root, exclude=["node_modules"], ignore=False)
    assert plan.files == 1 and plan.excluded == 1  # node_modules, pruned unread
    with pytest.raises(GroveError) as caught:
        pushplan.plan(root, ignore=False, limit=100)
    assert caught.value.code == "push_too_large" and caught.value.remedy
    with pytest.raises(GroveError) as missing:
        pushplan.source_stat(tmp_path / "nope")
    assert missing.value.code == "local_not_found"
