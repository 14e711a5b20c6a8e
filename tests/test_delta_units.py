"""Delta snapshots without a VM: the stream reducer on hand-made QEMU streams, the pagemap read
of a process's private pages, and garbage collection that keeps a delta's base file."""

from __future__ import annotations

import asyncio
import mmap
import os
import struct
import time
from pathlib import Path

import pytest

from engine.fork import delta, gc
from engine.fork.collector import _drop_memory
from engine.metering.pagemap import PAGE_SIZE, private_pages
from engine.sandbox.phase import Phase
from engine.store.records import SandboxRecord, TemplatePhase, TemplateRecord

P = delta.PAGE


def be64(value: int) -> bytes:
    return struct.pack(">Q", value)


def named(name: bytes) -> bytes:
    return bytes([len(name)]) + name


def page(offset: int, fill: int, block: bytes = b"") -> bytes:
    flags = delta.FLAG_PAGE | (0 if block else delta.FLAG_CONTINUE)
    return be64(offset | flags) + (named(block) if block else b"") + bytes([fill]) * P


def zero(offset: int, block: bytes = b"") -> bytes:
    flags = delta.FLAG_ZERO | (0 if block else delta.FLAG_CONTINUE)
    return be64(offset | flags) + (named(block) if block else b"") + b"\x00"


EOS = be64(delta.FLAG_EOS)
HEAD = (
    delta.MAGIC
    + b"\x07" + struct.pack(">I", 7) + b"microvm"  # configuration
    + b"\x05" + named(b"configuration/capabilities") + struct.pack(">II", 1, 1)
    + named(b"x-ignore-shared")
)  # fmt: skip
SETUP = (
    b"\x01" + struct.pack(">I", 2) + named(b"ram") + struct.pack(">II", 0, 4)
    + be64((3 * P + P) | delta.FLAG_MEM_SIZE)
    + named(b"mem") + be64(3 * P) + be64(0)
    + named(b"rom") + be64(P) + be64(0)
    + EOS + b"\x7e" + struct.pack(">I", 2)
)  # fmt: skip
PART = b"\x02" + struct.pack(">I", 2)
END = b"\x03" + struct.pack(">I", 2)
FOOTER = b"\x7e" + struct.pack(">I", 2)
DEVICES = b"\x04" + struct.pack(">I", 3) + named(b"timer") + b"device state\x00"


def reduce_bytes(tmp_path: Path, stream: bytes, private: bytes) -> tuple[bytes, delta.Reduced]:
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.write_bytes(stream)
    reduced = delta.reduce(raw, out, "mem", private)
    return out.read_bytes(), reduced


def test_pages_the_file_holds_are_dropped_and_blocks_are_named_again(tmp_path: Path) -> None:
    stream = (
        HEAD + SETUP
        + PART + page(0, 1, b"mem") + zero(P) + page(2 * P, 3) + page(0, 9, b"rom") + EOS + FOOTER
        + END + page(P, 4, b"mem") + page(2 * P, 5) + EOS + FOOTER
        + DEVICES
    )  # fmt: skip
    out, reduced = reduce_bytes(tmp_path, stream, bytes([0, 1, 0]))
    expected = (
        HEAD + SETUP
        # page 0 (which named the block) is dropped, so the zero record names it itself
        + PART + zero(P, b"mem") + page(0, 9, b"rom") + EOS + FOOTER
        + END + page(P, 4, b"mem") + EOS + FOOTER
        + DEVICES
    )  # fmt: skip
    assert out == expected
    assert (reduced.kept_pages, reduced.dropped_pages) == (2, 3)
    assert reduced.bytes_in == len(stream) and reduced.bytes_out == len(expected)


def test_all_private_keeps_the_stream_byte_for_byte(tmp_path: Path) -> None:
    stream = HEAD + SETUP + PART + page(0, 1, b"mem") + zero(P) + EOS + FOOTER + END + EOS + DEVICES
    out, reduced = reduce_bytes(tmp_path, stream, bytes([1]))  # page 1 lies past the map: kept
    assert out == stream and reduced.dropped_pages == 0


@pytest.mark.parametrize(
    ("stream", "cause"),
    [
        (b"not a stream", "not a QEMU migration stream"),
        (HEAD + b"\x04nothing", "no RAM section"),
        (HEAD + SETUP + PART + be64(0x40) + named(b"mem") + EOS, "unsupported RAM record"),
        (HEAD + SETUP + b"\x02" + struct.pack(">I", 7), "another iterable section"),
        (HEAD + SETUP + PART + page(0, 1, b"mem")[:100], "ends inside a record"),
        (HEAD + SETUP + b"\x04" + struct.pack(">I", 2), "unexpected section type"),
    ],
)
def test_a_stream_it_does_not_understand_is_refused(
    tmp_path: Path, stream: bytes, cause: str
) -> None:
    with pytest.raises(delta.StreamError, match=cause):
        reduce_bytes(tmp_path, stream, bytes(3))


def test_private_pages_are_the_ones_this_process_wrote() -> None:
    path = Path("/dev/shm") / f"grove-test-{os.getpid()}.mem"
    path.write_bytes(b"\x07" * (16 * PAGE_SIZE))
    try:
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE,
                               prot=mmap.PROT_READ | mmap.PROT_WRITE)  # fmt: skip
        try:
            mapped[3 * PAGE_SIZE] = 1  # copy-on-write: the process's own page
            mapped[7 * PAGE_SIZE] = 7  # written with the same byte: still a copy of its own
            assert mapped[5 * PAGE_SIZE] == 7  # read through: the file's page
            private = private_pages(os.getpid(), str(path), 20)
        finally:
            mapped.close()
    finally:
        path.unlink()
    assert [i for i, flag in enumerate(private) if flag] == [3, 7, 16, 17, 18, 19]


def template(tid: str, **fields: object) -> TemplateRecord:
    values: dict[str, object] = dict(
        id=tid, kind="snapshot", environment="debian:12", image_hash="", vcpus=1, mem_mib=128,
        phase=TemplatePhase.READY, mem_path=f"/m/{tid}.mem", state_path="", disk_path="",
        created_at=time.time(),
    )  # fmt: skip
    values.update(fields)
    return TemplateRecord(**values)  # type: ignore[arg-type]


def sandbox(sid: str, template_id: str) -> SandboxRecord:
    now = time.time()
    return SandboxRecord(
        id=sid, name=sid, environment="debian:12", phase=Phase.RUNNING, vcpus=1, mem_mib=128,
        created_at=now, updated_at=now, template_id=template_id, origin=template_id,
    )  # fmt: skip


def test_a_needed_delta_keeps_the_template_whose_file_it_maps() -> None:
    base = template("snap-base")
    child_of = template("snap-delta", mem_path=base.mem_path, mem_base=base.id)
    whole, _ = gc.needed([base, child_of], [sandbox("sb-1", child_of.id)])
    assert whole == {base.id, child_of.id}
    assert gc.dependents(base.id, [base, child_of], []) == [child_of.id]
    whole, _ = gc.needed([base, child_of], [])
    assert whole == set()


def test_dropping_a_delta_leaves_its_base_file(tmp_path: Path) -> None:
    mem = tmp_path / "base.mem"
    mem.write_bytes(b"x")
    _drop_memory(template("snap-delta", mem_path=str(mem), mem_base="snap-base"))
    assert mem.exists()
    _drop_memory(template("snap-base", mem_path=str(mem)))
    assert not mem.exists()


async def test_a_template_a_fork_filled_is_dug_once_the_fork_is_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from engine.fork import holes

    done: list[str] = []

    async def dig(path: Path) -> None:
        done.append(str(path))

    async def fill(path: Path) -> None:
        return None

    monkeypatch.setattr(holes.memfile, "dig", dig)
    monkeypatch.setattr(holes.memfile, "fill", fill)
    monkeypatch.setattr(holes.memfile, "allocated", lambda path: 90 << 20)
    monkeypatch.setattr(holes.memfile, "holes", lambda path: [(0, 4096), (65536, 8192)])
    monkeypatch.setattr(holes.memfile, "punch", lambda path, ranges: done.append(f"punch {ranges}"))
    tracker = holes.Holes()
    await tracker.fill("/m/t.mem")
    tracker.dig_later("/m/t.mem")
    assert tracker.used_bytes("/m/t.mem") == 90 << 20  # what it held before the fill
    await asyncio.sleep(0.05)
    # at once (GROVE_DIG_DELAY 0), and only the holes the fill allocated: no read of it all
    assert done == ["punch [(0, 4096), (65536, 8192)]"]
    tracker.dig_later("/m/t.mem", delay=60)  # no fill since: a whole dig when it comes
    await tracker.dig_now(["/m/t.mem"])  # engine stop: whatever waits is dug now
    assert done[1:] == ["/m/t.mem"]
