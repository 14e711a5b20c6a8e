"""Bulk transfers between the engine and a real agent process (no VM): tree push and pull,
commits checked by sha256, aborts that leave nothing behind, and the path ops the file verbs
use. The agent runs on the host over a unix socket, as in test_agent_protocol."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from test_agent_protocol import async_test, client_for

from engine.agent import AgentError
from engine.agent.transfer import Download, Upload
from guest.tarstream import Member, TarExtractor, TreePacker, walk

pytestmark = pytest.mark.timeout(120)


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"alpha\n",
        "sub/b.bin": os.urandom(300_000),
        "sub/deeper/c.txt": b"gamma" * 1000,
        "empty": b"",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "link").symlink_to("sub/b.bin")
    return files


def tar_of(root: Path) -> tuple[bytes, dict[str, str]]:
    packer = TreePacker(
        str(root), [Member(path="", type="directory", mode=0o755), *walk(str(root))]
    )
    out = bytearray()
    while chunk := packer.read(100_000):
        out += chunk
    return bytes(out), packer.hashes


async def push(
    client: object, dest: str, stream: bytes, hashes: dict[str, str]
) -> dict[str, object]:
    upload = Upload(client)  # type: ignore[arg-type]
    try:
        await upload.open({"op": "tree_push", "dest": dest}, 10)
        for i in range(0, len(stream), 65536):
            await upload.send(stream[i : i + 65536])
        return await upload.commit(sha256=hashes)
    finally:
        await upload.close()


def agent_dir(tmp_path: Path) -> Path:
    path = tmp_path / "agent"
    path.mkdir(exist_ok=True)
    return path


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.rglob("*") if ".grove-" in p.name]


@async_test
async def test_tree_push_merges_into_place_after_the_hashes_match(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src)
    stream, hashes = tar_of(src)
    dest = tmp_path / "guest" / "project"
    dest.mkdir(parents=True)
    (dest / "kept.txt").write_bytes(b"old and untouched")
    (dest / "a.txt").write_bytes(b"old a")
    async with client_for(agent_dir(tmp_path)) as (_agent, client):
        done = await push(client, str(dest), stream, hashes)
        assert done["event"] == "done" and done["files"] == len(files)
        for rel, data in files.items():
            assert (dest / rel).read_bytes() == data
        assert (dest / "kept.txt").read_bytes() == b"old and untouched"
        assert os.readlink(dest / "link") == "sub/b.bin"
        assert leftovers(dest.parent) == []


@async_test
async def test_a_push_with_a_wrong_hash_or_an_abort_changes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    stream, hashes = tar_of(src)
    dest = tmp_path / "guest" / "project"
    dest.mkdir(parents=True)
    (dest / "a.txt").write_bytes(b"old a")
    async with client_for(agent_dir(tmp_path)) as (_agent, client):
        bad = {**hashes, "a.txt": hashlib.sha256(b"something else").hexdigest()}
        with pytest.raises(AgentError) as caught:
            await push(client, str(dest), stream, bad)
        assert caught.value.code == "checksum_mismatch"
        assert (dest / "a.txt").read_bytes() == b"old a"
        assert not (dest / "sub").exists()
        assert leftovers(dest.parent) == []
        # Half a stream, then the engine gives up (its caller went away): nothing stays.
        upload = Upload(client)
        await upload.open({"op": "tree_push", "dest": str(dest)}, 10)
        await upload.send(stream[: len(stream) // 2])
        await upload.close()
        assert await client.ping() >= 0  # the abort is processed before the ping's reply
        assert leftovers(dest.parent) == []
        assert (dest / "a.txt").read_bytes() == b"old a"


@async_test
async def test_tree_pull_streams_a_tar_and_every_files_hash(tmp_path: Path) -> None:
    src = tmp_path / "guest" / "out"
    files = make_tree(src)
    async with client_for(agent_dir(tmp_path)) as (_agent, client):
        download = Download(client)
        reply = await download.open({"op": "tree_pull", "path": str(src)}, 10)
        assert reply["files"] == len(files)
        assert reply["bytes"] == sum(len(d) for d in files.values())
        extractor = TarExtractor(str(tmp_path / "staging"))
        async for chunk in download.chunks():
            extractor.feed(chunk)
        hashes: dict[str, str] = {}
        for event in download.events():
            hashes.update(event["sha256"])
        assert hashes == {rel: hashlib.sha256(d).hexdigest() for rel, d in files.items()}
        writer = extractor.finish()
        writer.verify(hashes)
        writer.commit(str(tmp_path / "local"), merge=False)
        for rel, data in files.items():
            assert (tmp_path / "local" / rel).read_bytes() == data


@async_test
async def test_file_commit_checks_the_hash_before_it_replaces(tmp_path: Path) -> None:
    target = tmp_path / "guest" / "f.bin"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"before")
    data = os.urandom(200_000)
    async with client_for(agent_dir(tmp_path)) as (_agent, client):
        upload = Upload(client)
        await upload.open({"op": "file_write", "path": str(target), "mode": 0o600}, 10)
        await upload.send(data)
        with pytest.raises(AgentError) as caught:
            await upload.commit(sha256=hashlib.sha256(b"not it").hexdigest())
        assert caught.value.code == "checksum_mismatch"
        assert target.read_bytes() == b"before"
        assert leftovers(target.parent) == []
        upload = Upload(client)
        await upload.open({"op": "file_write", "path": str(target), "mode": 0o600}, 10)
        await upload.send(data)
        await upload.commit(sha256=hashlib.sha256(data).hexdigest())
        assert target.read_bytes() == data
        assert target.stat().st_mode & 0o777 == 0o600


@async_test
async def test_stat_remove_and_shallow_listing(tmp_path: Path) -> None:
    root = tmp_path / "guest"
    make_tree(root)
    async with client_for(agent_dir(tmp_path)) as (_agent, client):
        info = await client.stat(str(root / "a.txt"))
        assert info["type"] == "file" and info["size"] == 6
        assert (await client.stat(str(root / "link")))["target"] == "sub/b.bin"
        shallow = await client.fs_manifest(str(root), hash_files=False, max_depth=1)
        assert sorted(e["path"] for e in shallow) == ["a.txt", "empty", "link", "sub"]
        await client.remove(str(root / "a.txt"))
        with pytest.raises(AgentError) as caught:
            await client.stat(str(root / "a.txt"))
        assert caught.value.code == "not_found"
        with pytest.raises(AgentError) as caught:
            await client.remove(str(root / "sub"))
        assert caught.value.code == "not_a_file"
