"""A snapshot as a delta over the memory file its source maps.

A sandbox maps its template's memory file MAP_PRIVATE, so each of its guest pages is either
still the file's page or a private copy the guest wrote. A snapshot's children can map the same
file; their state stream then needs only the source's private pages. The source migrates to a
file (QEMU reads and sends every page), and ``reduce`` drops each RAM record of the guest's
block whose page the source never wrote: the child reads it from the file, shared with every
other VM on it. Everything else (ROM blocks, device sections after RAM) passes unchanged.

QEMU 7.2's RAM records (migration/ram.c): a big-endian u64 of page offset | flags; an idstr
(length byte + name) unless RAM_SAVE_FLAG_CONTINUE says "same block as the record before";
then one fill byte for ZERO or a whole page for PAGE. The stream is checked as it is read;
anything unexpected (compression, XBZRLE, another iterable section) raises StreamError and the
caller falls back to a full copy.
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

PAGE = 4096
FLAG_ZERO = 0x02
FLAG_MEM_SIZE = 0x04
FLAG_PAGE = 0x08
FLAG_EOS = 0x10
FLAG_CONTINUE = 0x20
FLAGS_MASK = PAGE - 1
SECTION_START, SECTION_PART, SECTION_END, SECTION_FOOTER = 0x01, 0x02, 0x03, 0x7E
MAGIC = b"QEVM\x00\x00\x00\x03"
# The RAM section's START header: section id, idstr "ram", instance 0, version 4.
_RAM_START = re.compile(rb"\x01(....)\x03ram\x00\x00\x00\x00\x00\x00\x00\x04", re.DOTALL)
_be64 = struct.Struct(">Q")
_be32 = struct.Struct(">I")


class StreamError(Exception):
    """The stream is not one this reducer understands (the full copy is used instead)."""


@dataclass(frozen=True)
class Reduced:
    kept_pages: int  # guest pages written into the delta
    dropped_pages: int  # guest pages left to the memory file
    bytes_in: int
    bytes_out: int


def reduce(raw: Path, out: Path, block: str, private: bytes | bytearray) -> Reduced:
    """Write raw's stream to out without the pages of block that private marks 0.

    private[i] != 0: guest page i differs (or may differ) from the memory file; a page past
    its end counts as private."""
    with open(raw, "rb") as f:
        size = f.seek(0, 2)
        if size == 0:
            raise StreamError("empty migration stream")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            view = memoryview(data)
            try:
                with open(out, "wb", buffering=1 << 20) as sink:
                    counts = _Reducer(view, sink, block.encode(), private).run()
            finally:
                view.release()
    return Reduced(counts[0], counts[1], size, out.stat().st_size)


class _Reducer:
    def __init__(self, data: memoryview, sink: BinaryIO, block: bytes, private: bytes | bytearray):
        self.data = data
        self.sink = sink
        self.block = block
        self.private = private
        self.pos = 0
        self.kept = 0
        self.dropped = 0
        self.ignore_shared = False
        # The block the reader's last record named, and the last one the output named.
        self.read_block = b""
        self.written_block = b""

    def write(self, chunk: bytes | memoryview) -> None:
        self.sink.write(chunk)

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise StreamError("migration stream ends inside a record")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def be64(self) -> int:
        return int(_be64.unpack(self.take(8))[0])

    def be32(self) -> int:
        return int(_be32.unpack(self.take(4))[0])

    def idstr(self) -> bytes:
        length = self.take(1)[0]
        return bytes(self.take(length))

    def run(self) -> tuple[int, int]:
        if bytes(self.data[: len(MAGIC)]) != MAGIC:
            raise StreamError("not a QEMU migration stream (version 3)")
        found = _RAM_START.search(bytes(self.data[: 1 << 16]))
        if found is None:
            raise StreamError("no RAM section in the migration stream")
        head = bytes(self.data[: found.start()])
        # The configuration section lists the capabilities; x-ignore-shared adds block addrs.
        self.ignore_shared = b"\x0fx-ignore-shared" in head
        self.write(head)
        self.pos = found.start()
        ram_id = _be32.unpack(found.group(1))[0]
        while True:
            kind = self.take(1)[0]
            if kind not in (SECTION_START, SECTION_PART, SECTION_END):
                raise StreamError(f"unexpected section type {kind:#x} inside RAM")
            section_id = self.be32()
            if section_id != ram_id:
                raise StreamError(f"another iterable section ({section_id}) inside RAM")
            start = self.pos - 5
            if kind == SECTION_START:
                self.take(1 + 3 + 4 + 4)
            self.write(self.data[start : self.pos])
            self.records()
            if self.pos < len(self.data) and self.data[self.pos] == SECTION_FOOTER:
                self.write(self.take(5))
            if kind == SECTION_END:
                break
        self.write(self.data[self.pos :])  # device state, EOF, the vmstate description
        return self.kept, self.dropped

    def records(self) -> None:
        """One RAM section's records, up to and including its EOS. The loop is the hot path
        (one pass per guest page): locals, no helper calls for the common records."""
        data, size, private, block = self.data, len(self.data), self.private, self.block
        unpack = _be64.unpack_from
        pos = self.pos
        try:
            while True:
                if pos + 8 > size:
                    raise StreamError("migration stream ends inside a record")
                (header,) = unpack(data, pos)
                pos += 8
                flags = header & FLAGS_MASK
                if flags & (FLAG_EOS | FLAG_MEM_SIZE):
                    self.write(data[pos - 8 : pos])
                    if flags & FLAG_EOS:
                        return
                    self.pos = pos
                    self.block_list(header & ~FLAGS_MASK)
                    pos = self.pos
                    continue
                if not flags & FLAG_CONTINUE:
                    length = data[pos]
                    self.read_block = bytes(data[pos + 1 : pos + 1 + length])
                    pos += 1 + length
                kind = flags & ~FLAG_CONTINUE
                if kind == FLAG_ZERO:
                    length = 1
                elif kind == FLAG_PAGE:
                    length = PAGE
                else:
                    raise StreamError(f"unsupported RAM record flags {flags:#x}")
                if pos + length > size:
                    raise StreamError("migration stream ends inside a record")
                if self.read_block == block:
                    page = header // PAGE
                    if page < len(private) and not private[page]:
                        self.dropped += 1
                        pos += length
                        continue
                    self.kept += 1
                self.emit(header & ~FLAGS_MASK, kind, data[pos : pos + length])
                pos += length
        finally:
            self.pos = pos

    def emit(self, offset: int, kind: int, body: memoryview) -> None:
        # A dropped record may have been the one naming the block: name it again if needed.
        if self.read_block == self.written_block:
            self.write(_be64.pack(offset | kind | FLAG_CONTINUE))
        else:
            self.write(_be64.pack(offset | kind))
            self.write(bytes([len(self.read_block)]) + self.read_block)
            self.written_block = self.read_block
        self.write(body)

    def block_list(self, total: int) -> None:
        """The setup record's list of blocks: idstr, used length (and address), verbatim."""
        start = self.pos
        while total > 0:
            self.idstr()
            total -= self.be64()
            if self.ignore_shared:
                self.be64()
        if total < 0:
            raise StreamError("RAM block list longer than its total")
        self.write(self.data[start : self.pos])
