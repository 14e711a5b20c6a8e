"""Offline disk access: a qcow2 chain read through debugfs with no VM booted.

The images are tiny ext4 filesystems built with `mkfs.ext4 -d` from a tree made here. Every test
runs through both ways of seeing the chain (the FUSE export and the flattened copy) where it
matters, and afterwards no helper process of this test run, no process naming its files and no
FUSE mount may remain. No VM is booted: nothing here needs KVM.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from engine.errors import GroveError
from engine.files import disk as disk_module
from engine.files.disk import DiskEntry, OfflineDisk, export, sweep_stale
from engine.sandbox.phase import Phase
from engine.store.records import SandboxRecord, TemplatePhase, TemplateRecord

try:
    # engine.files.live (its Entry and ReadResult) imports the whole file-verb stack.
    from engine.files.live import Entry, ReadResult
    from engine.files.offline import ExportProgress, OfflineFiles

    OFFLINE_MISSING = ""
except ImportError as exc:
    OFFLINE_MISSING = str(exc)
needs_offline = pytest.mark.skipif(
    bool(OFFLINE_MISSING), reason=f"engine.files.offline does not import: {OFFLINE_MISSING}"
)

SBIN = "/usr/local/sbin:/usr/sbin:/sbin"
HELPERS = {"qemu-storage-daemon", "qemu-storage-da", "debugfs", "qemu-img", "setpriv"}
MTIME = 1_700_000_000
LONG_TARGET = "/" + "t" * 199  # 200 characters: a slow symlink, stored in a data block
# A short target that looks like the start of another inode in debugfs's stat output.
TRICKY_TARGET = "a\nInode: 99   Type: regular    Mode:  0644"


def _tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=SBIN)


pytestmark = [
    pytest.mark.skipif(
        not all(_tool(t) for t in ("qemu-img", "debugfs", "mkfs.ext4")),
        reason="needs qemu-img, debugfs and mkfs.ext4 (apt-get install qemu-utils e2fsprogs)",
    ),
    pytest.mark.timeout(120),  # a hung helper fails its test, not the whole run
]

FUSE_OK = os.geteuid() == 0 and os.path.exists("/dev/fuse") and bool(_tool("qemu-storage-daemon"))
VIAS = [
    pytest.param(
        "fuse",
        marks=pytest.mark.skipif(not FUSE_OK, reason="FUSE export needs root and /dev/fuse"),
    ),
    "copy",
]


@dataclass(frozen=True)
class Chain:
    base: Path
    top: Path
    blob: bytes


def _run(*args: str | Path) -> None:
    subprocess.run([_tool(str(args[0])) or str(args[0]), *map(str, args[1:])], check=True)


def _tree(root: Path, blob: bytes) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("grove\n")
    (root / "etc" / "secret").write_text("hush\n")
    (root / "etc" / "secret").chmod(0o600)
    (root / "bin").mkdir()
    (root / "bin" / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    (root / "bin" / "tool.sh").chmod(0o755)
    (root / "deep" / "a" / "b" / "c").mkdir(parents=True)
    (root / "deep" / "a" / "b" / "c" / "leaf.txt").write_text("leaf\n")
    (root / "dir with space").mkdir()
    (root / "dir with space" / "file with space.txt").write_text("spaced out\n")
    (root / 'q"uote.txt').write_text("quoted\n")
    (root / "new\nline").write_text("newline name\n")
    (root / "empty").mkdir()
    (root / "blob.bin").write_bytes(blob)
    (root / "short").symlink_to("etc/hostname")
    (root / "etclink").symlink_to("etc")
    (root / "long").symlink_to(LONG_TARGET)
    (root / "tricky").symlink_to(TRICKY_TARGET)
    (root / "abslink").symlink_to("/etc/hostname")  # absolute: the disk's root, not the host's
    (root / "uplink").symlink_to("deep/a/../../etc/hostname")
    (root / "loop1").symlink_to("loop2")
    (root / "loop2").symlink_to("loop1")
    os.utime(root / "etc" / "hostname", (MTIME, MTIME))


def _mkfs(src: Path, raw: Path) -> None:
    _run("mkfs.ext4", "-q", "-d", src, "-F", raw, "16M")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """A two-layer chain whose data all lives in the base."""
    root = tmp_path_factory.mktemp("chain")
    blob = random.Random(7).randbytes(3 << 20)
    _tree(root / "src", blob)
    _mkfs(root / "src", root / "raw.img")
    base, top = root / "base.qcow2", root / "top.qcow2"
    _run("qemu-img", "convert", "-O", "qcow2", root / "raw.img", base)
    _run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, top)
    return Chain(base, top, blob)


@pytest.fixture(scope="module")
def changed(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """A two-layer chain whose top layer holds real changes: a second filesystem is built from
    a modified tree, and the top is rebased onto the first one's image (qemu-img rebase writes
    the clusters that differ into the top)."""
    root = tmp_path_factory.mktemp("changed")
    blob = random.Random(8).randbytes(3 << 20)
    src = root / "src"
    _tree(src, blob)
    _mkfs(src, root / "old.img")
    (src / "etc" / "hostname").write_text("changed\n")
    os.utime(src / "etc" / "hostname", (MTIME, MTIME))
    (src / "etc" / "secret").unlink()
    (src / "etc" / "added.txt").write_text("added in the top layer\n")
    _mkfs(src, root / "new.img")
    base, new, top = root / "base.qcow2", root / "new.qcow2", root / "top.qcow2"
    _run("qemu-img", "convert", "-O", "qcow2", root / "old.img", base)
    _run("qemu-img", "convert", "-O", "qcow2", root / "new.img", new)
    _run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", new, top)
    _run("qemu-img", "rebase", "-f", "qcow2", "-F", "qcow2", "-b", base, top)
    new.unlink()
    return Chain(base, top, blob)


def _helpers() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.name() in HELPERS and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root)
    with open("/proc/self/mountinfo") as f:
        points = [line.split(" ")[4] for line in f]
    return [p for p in points if p.startswith(prefix)]


def _naming(root: Path) -> list[int]:
    """Processes anywhere (helpers outlive their parent) with an argument under root."""
    return disk_module._helpers_in(os.fsencode(root))


@pytest.fixture(autouse=True)
def leaves_nothing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield
    base = tmp_path_factory.getbasetemp()
    deadline = time.monotonic() + 5
    while (_helpers() or _naming(base)) and time.monotonic() < deadline:
        time.sleep(0.05)  # a killed debugfs may take a moment to be reaped
    assert not _helpers(), f"helper processes left: {[p.cmdline() for p in _helpers()]}"
    assert not _naming(base), f"processes still use the test's files: {_naming(base)}"
    assert not _mounts_under(base), "a FUSE mount was left behind"


async def _open(chain: Chain, work: Path, via: str) -> OfflineDisk:
    disk = await OfflineDisk.open(chain.top, work, use_fuse=via == "fuse")
    assert disk.via == via
    return disk


def _by_path(entries: list[DiskEntry]) -> dict[str, DiskEntry]:
    return {e.path: e for e in entries}


@pytest.mark.parametrize("via", VIAS)
async def test_list_root_and_a_file(chain: Chain, tmp_path: Path, via: str) -> None:
    async with await _open(chain, tmp_path / "work", via) as disk:
        root = _by_path(await disk.list("/"))
        assert set(root) == {
            "/lost+found", "/etc", "/bin", "/deep", "/dir with space", '/q"uote.txt',
            "/new\nline", "/empty", "/blob.bin", "/short", "/etclink", "/long", "/tricky",
            "/abslink", "/uplink", "/loop1", "/loop2",
        }  # fmt: skip
        assert root["/etc"].type == "directory"
        assert root["/blob.bin"] == DiskEntry(
            "/blob.bin", "file", 3 << 20, 0o644, root["/blob.bin"].mtime, ""
        )
        assert root["/short"].type == "symlink"
        assert root["/short"].link_target == "etc/hostname"
        assert await disk.list("/empty") == []
        # A file lists as itself; redundant slashes and '.' parts are dropped.
        (only,) = await disk.list("//etc/./hostname")
        assert only.path == "/etc/hostname" and only.type == "file" and only.size == 6
        (link,) = await disk.list("/long")
        assert link.type == "symlink" and link.link_target == LONG_TARGET
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


@pytest.mark.parametrize("via", VIAS)
async def test_recursive_list(chain: Chain, tmp_path: Path, via: str) -> None:
    async with await _open(chain, tmp_path / "work", via) as disk:
        entries = await disk.list("/", recursive=True)
        paths = [e.path for e in entries]
        assert paths == sorted(paths) and len(set(paths)) == len(paths)
        assert all(p.startswith("/") and not p.endswith(("/.", "/..")) for p in paths)
        found = _by_path(entries)
        for path in ("/deep/a/b/c/leaf.txt", "/dir with space/file with space.txt"):
            assert found[path].type == "file"
        assert found["/deep/a/b/c"].type == "directory"
        assert found["/tricky"].link_target == TRICKY_TARGET
        assert found["/new\nline"].size == len("newline name\n")
        # 24 from the tree, plus lost+found.
        assert len(entries) == 25
        sub = await disk.list("/deep", recursive=True)
        assert [e.path for e in sub] == [
            "/deep/a", "/deep/a/b", "/deep/a/b/c", "/deep/a/b/c/leaf.txt",
        ]  # fmt: skip
        with pytest.raises(GroveError) as err:
            await disk.list("/", recursive=True, max_entries=5)
        assert err.value.code == "too_many_entries" and err.value.remedy


@pytest.mark.parametrize("via", VIAS)
async def test_stat_and_symlinks(chain: Chain, tmp_path: Path, via: str) -> None:
    async with await _open(chain, tmp_path / "work", via) as disk:
        hostname = await disk.stat("/etc/hostname")
        assert hostname.type == "file" and hostname.size == 6 and hostname.mode == 0o644
        assert hostname.mtime == pytest.approx(MTIME, abs=1)
        assert (await disk.stat("/etc/secret")).mode == 0o600
        assert (await disk.stat("/bin/tool.sh")).mode == 0o755
        root = await disk.stat("/")
        assert root.path == "/" and root.type == "directory" and root.size > 0
        assert (await disk.stat("/etc/")).type == "directory"
        assert (await disk.stat("/long")).link_target == LONG_TARGET
        assert (await disk.stat("/short")).link_target == "etc/hostname"
        assert (await disk.stat("/tricky")).link_target == TRICKY_TARGET
        spaced = await disk.stat("/dir with space/file with space.txt")
        assert spaced.size == len("spaced out\n")
        assert (await disk.stat('/q"uote.txt')).size == len("quoted\n")
        # A symlink in the middle of a path is followed, the last one is not.
        assert (await disk.stat("/etclink")).type == "symlink"
        assert (await disk.stat("/etclink/hostname")).type == "file"


@pytest.mark.parametrize("via", VIAS)
async def test_read(chain: Chain, tmp_path: Path, via: str) -> None:
    async with await _open(chain, tmp_path / "work", via) as disk:
        found = await disk.read("/blob.bin", 4 << 20)
        assert (found.entry.size, found.truncated) == (3 << 20, False)
        assert hashlib.sha256(found.data).digest() == hashlib.sha256(chain.blob).digest()
        assert await _read(disk, "/blob.bin", 1000) == (chain.blob[:1000], 3 << 20, True)
        assert await _read(disk, "/blob.bin", 3 << 20) == (chain.blob, 3 << 20, False)
        assert await _read(disk, "/blob.bin", 0) == (b"", 3 << 20, True)
        assert await _read(disk, "/dir with space/file with space.txt", 100) == (
            b"spaced out\n", 11, False,
        )  # fmt: skip
        assert await _read(disk, '/q"uote.txt', 100) == (b"quoted\n", 7, False)
        assert await _read(disk, "/etc/secret", 2) == (b"hu", 5, True)
        # A symlinked directory in the middle of a path is followed (inside the disk).
        assert await _read(disk, "/etclink/hostname", 100) == (b"grove\n", 6, False)
        # So is a final symlink, as open() in the guest would: relative to its directory,
        # absolute from the disk's root, '..' through the real parents.
        resolved = {
            "/short": "/etc/hostname", "/abslink": "/etc/hostname",
            "/uplink": "/deep/a/../../etc/hostname",
        }  # fmt: skip
        for link, target in resolved.items():
            found = await disk.read(link, 100)
            assert (found.data, found.truncated) == (b"grove\n", False)
            assert found.entry.path == target and found.entry.type == "file"
            assert found.entry.mtime == pytest.approx(MTIME, abs=1)


async def _read(disk: OfflineDisk, path: str, max_bytes: int) -> tuple[bytes, int, bool]:
    found = await disk.read(path, max_bytes)
    return found.data, found.entry.size, found.truncated


@pytest.mark.parametrize("via", VIAS)
async def test_errors(chain: Chain, tmp_path: Path, via: str) -> None:
    async with await _open(chain, tmp_path / "work", via) as disk:

        async def code(call: object) -> str:
            assert asyncio.iscoroutine(call)
            with pytest.raises(GroveError) as err:
                await call
            assert err.value.message and "\n" not in err.value.message and err.value.remedy
            return err.value.code

        assert await code(disk.stat("/nope")) == "file_not_found"
        assert await code(disk.list("/etc/nope")) == "file_not_found"
        assert await code(disk.read("/nope", 10)) == "file_not_found"
        assert await code(disk.stat("/etc/hostname/below")) == "file_not_found"
        assert await code(disk.read("/etc", 10)) == "not_a_file"
        assert await code(disk.read("/etclink", 10)) == "not_a_file"  # a symlink to a dir
        # Dangling (its target is not on the disk), looping, unfollowable (a line break).
        assert await code(disk.read("/long", 10)) == "file_not_found"
        assert await code(disk.read("/loop1", 10)) == "symlink_loop"
        assert await code(disk.stat("/loop1/x")) == "symlink_loop"
        assert await code(disk.read("/tricky", 10)) == "file_not_found"
        for bad in ("etc/hostname", "", "/etc\x00x", "/new\nline", "/a\rb"):
            assert await code(disk.stat(bad)) == "invalid_argument"
            assert await code(disk.list(bad)) == "invalid_argument"
        assert await code(disk.read("/etc/hostname", -1)) == "invalid_argument"
    with pytest.raises(GroveError) as err:
        await disk.stat("/")
    assert err.value.code == "disk_closed"


@pytest.mark.parametrize("via", VIAS)
async def test_top_layer_changes(changed: Chain, tmp_path: Path, via: str) -> None:
    extents = json.loads(
        subprocess.run(
            ["qemu-img", "map", "--output=json", str(changed.top)],
            check=True, capture_output=True, text=True,
        ).stdout
    )  # fmt: skip
    assert any(e["depth"] == 0 and e["data"] for e in extents), "the top layer holds no data"
    assert any(e["depth"] == 1 and e["data"] for e in extents), "the base holds no data"
    async with await _open(changed, tmp_path / "work", via) as disk:
        etc = _by_path(await disk.list("/etc"))
        assert set(etc) == {"/etc/hostname", "/etc/added.txt"}
        assert await _read(disk, "/etc/hostname", 100) == (b"changed\n", 8, False)
        assert (await disk.read("/blob.bin", 4 << 20)).data == changed.blob
    # The base alone is still the old filesystem.
    async with await OfflineDisk.open(changed.base, tmp_path / "work", use_fuse=via == "fuse") as d:
        assert set(_by_path(await d.list("/etc"))) == {"/etc/hostname", "/etc/secret"}
        assert await _read(d, "/etc/hostname", 100) == (b"grove\n", 6, False)


@pytest.mark.parametrize("via", VIAS)
async def test_read_only_and_shared(chain: Chain, tmp_path: Path, via: str) -> None:
    top = tmp_path / "top.qcow2"
    shutil.copyfile(chain.top, top)  # its own top layer: this one is opened writable
    own = Chain(chain.base, top, chain.blob)
    # Another holder of the top layer, writable, as a running VM would be (qemu-io waits for
    # commands on stdin, holding the image's locks meanwhile).
    writer = subprocess.Popen(
        [_tool("qemu-io") or "qemu-io", "-f", "qcow2", str(top)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.3)
        assert writer.poll() is None
        before = {p: (_sha256(p), p.stat().st_mtime_ns) for p in (own.base, own.top)}
        first = await _open(own, tmp_path / "a", via)
        second = await _open(own, tmp_path / "b", "copy")
        try:
            one, two = await asyncio.gather(first.list("/etc"), second.list("/etc"))
            assert one == two and len(one) == 2
        finally:
            await asyncio.gather(first.close(), second.close())
        after = {p: (_sha256(p), p.stat().st_mtime_ns) for p in (own.base, own.top)}
        assert after == before
    finally:
        assert writer.stdin is not None
        writer.stdin.close()
        writer.wait(10)


async def test_export(chain: Chain, tmp_path: Path) -> None:
    reference = tmp_path / "reference.raw"
    _run("qemu-img", "convert", "-O", "raw", chain.top, reference)
    for fmt in ("raw", "qcow2"):
        seen: list[float] = []
        out = tmp_path / f"out.{fmt}"
        await export(chain.top, fmt, out, seen.append)
        assert seen and seen[-1] == 100.0 and seen == sorted(set(seen))
        info = json.loads(
            subprocess.run(
                ["qemu-img", "info", "--output=json", str(out)],
                check=True, capture_output=True, text=True,
            ).stdout
        )  # fmt: skip
        assert info["format"] == fmt and "backing-filename" not in info
        flat = tmp_path / f"flat-{fmt}.raw"
        _run("qemu-img", "convert", "-O", "raw", out, flat)
        assert _sha256(flat) == _sha256(reference)
    assert _sha256(tmp_path / "out.raw") == _sha256(reference)


async def test_export_refusals_and_cleanup(chain: Chain, tmp_path: Path) -> None:
    existing = tmp_path / "existing.qcow2"
    existing.write_bytes(b"keep me")
    with pytest.raises(GroveError) as err:
        await export(chain.top, "qcow2", existing, lambda p: None)
    assert err.value.code == "already_exists" and existing.read_bytes() == b"keep me"
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(GroveError) as err:
        await export(chain.top, "raw", dangling, lambda p: None)
    assert err.value.code == "already_exists" and not (tmp_path / "nowhere").exists()
    with pytest.raises(GroveError) as err:
        await export(chain.top, "vmdk", tmp_path / "out.vmdk", lambda p: None)
    assert err.value.code == "invalid_argument"
    assert not (tmp_path / "out.vmdk").exists()

    # A failed conversion (here: the backing file is gone) leaves no output.
    broken = tmp_path / "broken.qcow2"
    _run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-u", "-b", tmp_path / "gone",
         broken, "16M")  # fmt: skip
    with pytest.raises(GroveError) as err:
        await export(broken, "raw", tmp_path / "failed.raw", lambda p: None)
    assert err.value.code == "export_failed" and not (tmp_path / "failed.raw").exists()
    assert "\n" not in err.value.message

    # Nor does a progress callback that raises, nor cancellation.
    def boom(percent: float) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        await export(chain.top, "raw", tmp_path / "boom.raw", boom)
    assert not (tmp_path / "boom.raw").exists()
    task: asyncio.Task[None] | None = None

    def cancel(percent: float) -> None:
        assert task is not None
        task.cancel()

    task = asyncio.create_task(export(chain.top, "qcow2", tmp_path / "cancel.qcow2", cancel))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not (tmp_path / "cancel.qcow2").exists()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["broken.qcow2", "dangling", "existing.qcow2"]


@pytest.mark.skipif(not FUSE_OK, reason="FUSE export needs root and /dev/fuse")
async def test_fuse_fallback(chain: Chain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with await OfflineDisk.open(chain.top, tmp_path / "w") as disk:
        assert disk.via == "fuse"  # the default where FUSE works
    monkeypatch.setenv("GROVE_OFFLINE_DISK_FUSE", "0")
    async with await OfflineDisk.open(chain.top, tmp_path / "w") as disk:
        assert disk.via == "copy"
    monkeypatch.delenv("GROVE_OFFLINE_DISK_FUSE")
    # A daemon that fails: the default falls back to the copy, use_fuse=True reports it.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "qemu-storage-daemon").write_text("#!/bin/sh\necho 'export failed' >&2\nexit 1\n")
    (fake / "qemu-storage-daemon").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    async with await OfflineDisk.open(chain.top, tmp_path / "w") as disk:
        assert disk.via == "copy"
        assert (await disk.stat("/etc/hostname")).size == 6
    with pytest.raises(GroveError) as err:
        await OfflineDisk.open(chain.top, tmp_path / "w", use_fuse=True)
    assert err.value.code == "fuse_export_failed" and "export failed" in err.value.message
    assert list((tmp_path / "w").iterdir()) == []


@pytest.mark.parametrize("via", VIAS)
async def test_close_and_cancel_leave_nothing(chain: Chain, tmp_path: Path, via: str) -> None:
    work = tmp_path / "work"
    disk = await _open(chain, work, via)
    raw = disk.raw
    assert raw.exists()
    await disk.close()
    await disk.close()  # twice is fine
    assert not raw.exists() and list(work.iterdir()) == []
    # Cancelled at any point of opening or listing: still nothing left.
    cancelled = 0
    for delay in (0.0, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064):

        async def use() -> None:
            async with await _open(chain, work, via) as d:
                await d.list("/", recursive=True)

        task = asyncio.create_task(use())
        await asyncio.sleep(delay)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            cancelled += 1
        assert list(work.iterdir()) == []
        assert not _mounts_under(tmp_path)
    assert cancelled >= 3


async def test_missing_tools_and_bad_images(
    chain: Chain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(GroveError) as err:
        await OfflineDisk.open(tmp_path / "none.qcow2", tmp_path / "w")
    assert err.value.code == "disk_not_found"
    blank = tmp_path / "blank.qcow2"
    _run("qemu-img", "create", "-q", "-f", "qcow2", blank, "16M")
    for use_fuse in (FUSE_OK, False):
        with pytest.raises(GroveError) as err:
            async with await OfflineDisk.open(blank, tmp_path / "w", use_fuse=use_fuse) as disk:
                await disk.list("/")
        assert err.value.code == "disk_unreadable"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(disk_module, "_SBIN", str(tmp_path / "empty"))
    with pytest.raises(GroveError) as err:
        await OfflineDisk.open(chain.top, tmp_path / "w")
    assert err.value.code == "debugfs_missing" and "e2fsprogs" in err.value.remedy


# Exports: written beside the output, renamed at the end, never from a changing disk.


async def test_export_writes_beside_and_renames(chain: Chain, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "disk.qcow2"
    seen: list[list[str]] = []

    def progress(percent: float) -> None:
        # While it runs: only a hidden partial name beside the output, never the output.
        seen.append(sorted(p.name for p in out_dir.iterdir()))

    await export(chain.top, "qcow2", out, progress)
    assert seen and all(len(names) == 1 for names in seen)
    assert all(n[0].startswith(".disk.qcow2.") and n[0].endswith(".part") for n in seen)
    assert [p.name for p in out_dir.iterdir()] == ["disk.qcow2"]
    assert out.stat().st_mode & 0o777 == 0o644
    # The chain it came from is untouched: export opens every layer read-only.
    with pytest.raises(GroveError) as err:
        await export(chain.top, "qcow2", out, lambda p: None)
    assert err.value.code == "already_exists"


async def test_export_refuses_a_disk_that_changed(chain: Chain, tmp_path: Path) -> None:
    top = tmp_path / "top.qcow2"
    shutil.copyfile(chain.top, top)

    def touch(percent: float) -> None:
        # What a VM started during the export would do: write the top layer.
        os.utime(top, ns=(time.time_ns(), time.time_ns() + 10**9))

    with pytest.raises(GroveError) as err:
        await export(top, "raw", tmp_path / "out.raw", touch)
    assert err.value.code == "disk_changed" and err.value.remedy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["top.qcow2"]


async def test_export_while_the_top_is_held(chain: Chain, tmp_path: Path) -> None:
    top = tmp_path / "top.qcow2"
    shutil.copyfile(chain.top, top)
    writer = subprocess.Popen(
        [_tool("qemu-io") or "qemu-io", "-f", "qcow2", str(top)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.3)
        before = {p: (_sha256(p), p.stat().st_mtime_ns) for p in (chain.base, top)}
        await export(top, "raw", tmp_path / "out.raw", lambda p: None)
        assert {p: (_sha256(p), p.stat().st_mtime_ns) for p in (chain.base, top)} == before
    finally:
        assert writer.stdin is not None
        writer.stdin.close()
        writer.wait(10)
    reference = tmp_path / "reference.raw"
    _run("qemu-img", "convert", "-O", "raw", chain.top, reference)
    assert _sha256(tmp_path / "out.raw") == _sha256(reference)


# OfflineFiles: what the API calls, from a sandbox or snapshot name to entries and bytes.


def _sandbox(phase: Phase, disk: Path | str) -> SandboxRecord:
    return SandboxRecord(
        id="sb-1", name="one", environment="debian:12", phase=phase, vcpus=1, mem_mib=256,
        created_at=0.0, updated_at=0.0, disk_path=str(disk),
    )  # fmt: skip


def _snapshot(disk: Path) -> TemplateRecord:
    return TemplateRecord(
        id="tp-1", kind="snapshot", environment="debian:12", image_hash="", vcpus=1,
        mem_mib=256, phase=TemplatePhase.READY, mem_path="", state_path="", disk_path=str(disk),
        created_at=0.0, name="snap",
    )  # fmt: skip


def _files(tmp: Path, sandboxes: dict[str, SandboxRecord], top: Path) -> OfflineFiles:
    def sandbox(ref: str) -> SandboxRecord:
        if ref not in sandboxes:
            raise GroveError("sandbox_not_found", f"no sandbox {ref}", "")
        return sandboxes[ref]

    def snapshot(name: str) -> TemplateRecord:
        if name != "snap":
            raise GroveError("snapshot_not_found", f"no snapshot {name}", "")
        return _snapshot(top)

    return OfflineFiles(sandbox, snapshot, tmp)


@needs_offline
async def test_offline_files_resolve(chain: Chain, tmp_path: Path) -> None:
    files = _files(
        tmp_path / "tmp",
        {
            "stopped": _sandbox(Phase.STOPPED, chain.top),
            "failed": _sandbox(Phase.FAILED, chain.top),
            "running": _sandbox(Phase.RUNNING, chain.top),
            "paused": _sandbox(Phase.PAUSED, chain.top),
            "terminated": _sandbox(Phase.TERMINATED, chain.top),
            "lost": _sandbox(Phase.STOPPED, tmp_path / "gone.qcow2"),
            "blank": _sandbox(Phase.STOPPED, ""),
        },
        chain.top,
    )
    assert files.resolve("stopped") == chain.top
    assert files.resolve("failed") == chain.top  # its QEMU is gone: a post-mortem read
    assert files.resolve("snap") == chain.top
    expected = {
        "running": "sandbox_running", "paused": "sandbox_running", "terminated": "disk_gone",
        "lost": "disk_gone", "blank": "disk_gone", "nobody": "disk_not_found",
        "": "invalid_argument",
    }  # fmt: skip
    for target, code in expected.items():
        with pytest.raises(GroveError) as err:
            files.resolve(target)
        assert err.value.code == code and err.value.remedy and "\n" not in err.value.message
    # Refused before anything is made.
    with pytest.raises(GroveError) as err:
        await files.list("running", "/")
    assert err.value.code == "sandbox_running"
    assert not (tmp_path / "tmp").exists() or not any((tmp_path / "tmp").iterdir())


@needs_offline
async def test_offline_files_list_and_read(chain: Chain, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    files = _files(tmp, {"sb-1": _sandbox(Phase.STOPPED, chain.top)}, chain.top)
    for target in ("sb-1", "snap"):
        entries = {e.path: e for e in await files.list(target, "/etc")}
        assert set(entries) == {"/etc/hostname", "/etc/secret"}
        assert isinstance(entries["/etc/hostname"], Entry)
        assert entries["/etc/secret"].mode == 0o600
        deep = await files.list(target, "/deep/", recursive=True)
        assert deep[-1].path == "/deep/a/b/c/leaf.txt"
        links = {e.path: e for e in await files.list(target, "/") if e.type == "symlink"}
        assert links["/short"].link_target == "etc/hostname"
        # The default cap is 64 KiB, and it says so.
        read = await files.read(target, "/blob.bin")
        assert isinstance(read, ReadResult)
        assert (len(read.data), read.size, read.truncated) == (64 * 1024, 3 << 20, True)
        assert read.data == chain.blob[: 64 * 1024]
        read = await files.read(target, "/etc/hostname", 100)
        assert (read.data, read.size, read.truncated, read.mode) == (b"grove\n", 6, False, 0o644)
        assert read.mtime == pytest.approx(MTIME, abs=1)
        assert (await files.read(target, "/short")).data == b"grove\n"
        assert (await files.read(target, "/etc/../etc/./hostname")).data == b"grove\n"
    expected = {
        ("/nope", "file_not_found"): "grove disk ls sb-1 /",
        ("/etc/nope", "file_not_found"): "grove disk ls sb-1 /etc",
        ("/etc", "not_a_file"): "grove disk ls sb-1 /etc",
    }
    for (path, code), remedy in expected.items():
        with pytest.raises(GroveError) as err:
            await files.read("sb-1", path)
        assert err.value.code == code and remedy in err.value.remedy
        assert err.value.message.startswith("sb-1: ") and "\n" not in err.value.message
    bad = {
        ("etc", 0): "invalid_argument", ("", 0): "invalid_argument",
        ("/etc/hostname", -1): "invalid_argument", ("/etc/hostname", 2 << 20): "read_too_large",
    }  # fmt: skip
    for (path, limit), code in bad.items():
        with pytest.raises(GroveError) as err:
            await files.read("sb-1", path, limit)
        assert err.value.code == code
    with pytest.raises(GroveError) as err:
        await files.list("sb-1", "relative/path")
    assert err.value.code == "invalid_argument"
    assert list(tmp.iterdir()) == []  # every call's disk-* directory is gone


@needs_offline
async def test_offline_files_export(chain: Chain, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    files = _files(tmp, {"sb-1": _sandbox(Phase.STOPPED, chain.top)}, chain.top)
    reference = tmp_path / "reference.raw"
    _run("qemu-img", "convert", "-O", "raw", chain.top, reference)
    for fmt in ("qcow2", "raw"):
        progress: list[float] = []
        headers: list[ExportProgress] = []
        out = tmp_path / f"got.{fmt}"
        with open(out, "wb") as f:
            async for item in files.export("sb-1", fmt):
                if isinstance(item, bytes):
                    assert headers, "data before the header"
                    f.write(item)
                elif item.stage == "converting":
                    assert not headers
                    progress.append(item.percent)
                else:
                    headers.append(item)
                    # The one file being streamed lives in a private disk-* directory.
                    (work,) = tmp.iterdir()
                    assert work.name.startswith("disk-")
        assert progress and progress[-1] == 100.0 and progress == sorted(progress)
        (header,) = headers
        assert (header.stage, header.format, header.size) == ("header", fmt, out.stat().st_size)
        assert header.virtual_size == 16 << 20
        flat = tmp_path / f"flat-{fmt}.raw"
        _run("qemu-img", "convert", "-O", "raw", out, flat)
        assert _sha256(flat) == _sha256(reference)
        assert list(tmp.iterdir()) == []
    # A client that goes away mid-stream: the generator is closed, the temp file goes.
    stream = files.export("snap", "raw")
    async for item in stream:
        if isinstance(item, bytes):
            break
    await stream.aclose()
    assert list(tmp.iterdir()) == []
    for target, fmt, code in (("sb-1", "vmdk", "invalid_argument"), ("x", "raw", "disk_not_found")):
        with pytest.raises(GroveError) as err:
            async for _ in files.export(target, fmt):
                pass
        assert err.value.code == code
    assert list(tmp.iterdir()) == []


# Start-up sweep: what a crashed engine left in $GROVE_HOME/tmp/disk-*.


def _wait_for(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _fuse_export(top: Path, mountpoint: Path) -> subprocess.Popen[bytes]:
    """A qemu-storage-daemon FUSE export like the one OfflineDisk starts, but not its own."""
    mountpoint.touch()
    daemon = subprocess.Popen(
        [
            _tool("qemu-storage-daemon") or "qemu-storage-daemon",
            "--blockdev", json.dumps({"driver": "file", "node-name": "f", "filename": str(top),
                                      "read-only": True, "force-share": True}),
            "--blockdev", json.dumps({"driver": "qcow2", "node-name": "d", "file": "f",
                                      "read-only": True, "force-share": True}),
            "--export", json.dumps({"type": "fuse", "id": "e", "node-name": "d",
                                    "mountpoint": str(mountpoint), "writable": False}),
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert _wait_for(lambda: bool(_mounts_under(mountpoint))), "the export did not mount"
    return daemon


def test_sweep_removes_plain_leftovers(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    assert sweep_stale(tmp) == []  # no tmp directory yet: nothing to do
    (tmp / "disk-abc12345" / "links-x").mkdir(parents=True)
    (tmp / "disk-abc12345" / "copy.raw").write_bytes(b"\0" * 4096)
    (tmp / "disk-def67890").mkdir()
    (tmp / "disk-stray.part").write_bytes(b"x")
    (tmp / "diff-123").mkdir()  # another component's scratch: not the sweep's
    (tmp / "keep.txt").write_text("mine")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    (tmp / "disk-link").symlink_to(outside)  # a symlink is removed, never followed
    # A stale helper (here a sleeper whose argument names a file in a disk-* directory).
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", str(tmp / "disk-abc12345" / "x")]
    )
    marker = os.fsencode(tmp / "disk-abc12345" / "x")
    deadline = time.monotonic() + 10
    while marker not in Path(f"/proc/{sleeper.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the sleeper never started"
        time.sleep(0.05)  # under load the child may not have exec'd its argv yet
    try:
        removed = sweep_stale(tmp)
        assert sleeper.wait(30) == -9
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sorted(removed) == ["disk-abc12345", "disk-def67890", "disk-link", "disk-stray.part"]
    assert sorted(p.name for p in tmp.iterdir()) == ["diff-123", "keep.txt"]
    assert (outside / "precious").read_text() == "keep"


@pytest.mark.skipif(not FUSE_OK, reason="FUSE export needs root and /dev/fuse")
def test_sweep_kills_exports_and_unmounts(chain: Chain, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    (tmp / "disk-live0000").mkdir(parents=True)
    (tmp / "disk-dead0000").mkdir()
    live = _fuse_export(chain.top, tmp / "disk-live0000" / "export.raw")
    dead = _fuse_export(chain.top, tmp / "disk-dead0000" / "export.raw")
    try:
        # A daemon killed outright leaves its mount behind, answering nothing.
        dead.kill()
        dead.wait()
        assert len(_mounts_under(tmp)) == 2
        assert sorted(sweep_stale(tmp)) == ["disk-dead0000", "disk-live0000"]
        assert live.wait(5) != 0
    finally:
        for daemon in (live, dead):
            daemon.kill()
            daemon.wait()
    assert not _mounts_under(tmp) and list(tmp.iterdir()) == []


_CRASHER = """
import asyncio, os, signal, sys
from pathlib import Path
from engine.files import disk

async def main() -> None:
    top, tmp, how = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    if how == "export":
        def crash(percent: float) -> None:
            print("ready", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        await disk.export(top, "raw", disk.work_dir(tmp) / "disk.raw", crash)
    else:
        await disk.OfflineDisk.open(top, tmp, use_fuse=how == "fuse")
        print("ready", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


@pytest.mark.parametrize("how", [*VIAS, "export"])
def test_engine_crash_then_sweep(chain: Chain, tmp_path: Path, how: str) -> None:
    """An engine killed with a disk open (or an export running): its helpers die with it
    (parent-death signal), and the next start-up's sweep removes the rest."""
    tmp = tmp_path / "tmp"
    crasher = subprocess.run(
        [sys.executable, "-c", _CRASHER, str(chain.top), str(tmp), how],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, timeout=60,
    )  # fmt: skip
    assert crasher.returncode == -9 and crasher.stdout == b"ready\n", crasher.stderr
    (left,) = tmp.iterdir()
    assert left.name.startswith("disk-")
    assert _wait_for(lambda: not _naming(tmp)), "a helper outlived the engine"
    assert _wait_for(lambda: not _mounts_under(tmp)), "the export outlived the engine"
    assert sweep_stale(tmp) == [left.name]
    assert list(tmp.iterdir()) == []


# Performance: a 1 GiB-virtual chain with a few thousand files.


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("big")
    src = root / "src"
    for d in range(100):
        sub = src / f"d{d:03}" / "sub"
        sub.mkdir(parents=True)
        for f in range(30):
            (sub / f"f{f:02}.txt").write_text(f"{d}/{f}\n" * 20)
    (src / "big.bin").write_bytes(random.Random(9).randbytes(64 << 20))
    _run("mkfs.ext4", "-q", "-d", src, "-F", root / "raw.img", "1G")
    base, top = root / "base.qcow2", root / "top.qcow2"
    _run("qemu-img", "convert", "-O", "qcow2", root / "raw.img", base)
    (root / "raw.img").unlink()
    _run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, top)
    return top


@pytest.mark.parametrize("via", VIAS)
async def test_a_1gib_chain_lists_in_seconds(big: Path, tmp_path: Path, via: str) -> None:
    started = time.monotonic()
    async with await OfflineDisk.open(big, tmp_path, use_fuse=via == "fuse") as disk:
        entries = await disk.list("/", recursive=True)
        found = await disk.read("/d042/sub/f07.txt", 1000)
    elapsed = time.monotonic() - started
    assert len(entries) == 1 + 100 * 2 + 100 * 30 + 1  # lost+found, dirs, files, big.bin
    assert found.data == b"42/7\n" * 20
    assert elapsed < 5.0, f"open, recursive list and read took {elapsed:.1f} s"
