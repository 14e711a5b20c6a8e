"""A bounded byte ring addressed by absolute stream offsets (cursors).

Offset 0 is the first byte the shell ever wrote; the ring keeps the last ``capacity`` bytes.
Readers hold cursors, so any number of them can read at their own pace and a reader that fell
behind the kept window learns it (the returned start is past its cursor) instead of silently
reading the wrong bytes.
"""

from __future__ import annotations

DEFAULT_CAPACITY = 1 << 20


class Scrollback:
    __slots__ = ("_buf", "_start", "capacity")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._buf = bytearray()
        self._start = 0

    @property
    def start(self) -> int:
        """Offset of the oldest byte still kept."""
        return self._start

    @property
    def end(self) -> int:
        """Offset one past the newest byte (the total ever written)."""
        return self._start + len(self._buf)

    def append(self, data: bytes) -> None:
        self._buf += data
        excess = len(self._buf) - self.capacity
        if excess > 0:
            # bytearray deletes from the front in O(1) amortized (it moves its start pointer).
            del self._buf[:excess]
            self._start += excess

    def read(self, cursor: int, limit: int) -> tuple[int, bytes]:
        """Up to ``limit`` bytes from ``cursor`` (or from the oldest kept byte if it is past
        them); returns where the bytes really begin."""
        begin = min(max(cursor, self._start), self.end)
        offset = begin - self._start
        return begin, bytes(self._buf[offset : offset + max(limit, 0)])

    def copy(self) -> Scrollback:
        clone = Scrollback(self.capacity)
        clone._buf = bytearray(self._buf)
        clone._start = self._start
        return clone

    @classmethod
    def restore(cls, start: int, data: bytes, capacity: int = DEFAULT_CAPACITY) -> Scrollback:
        ring = cls(capacity)
        ring._start = start
        ring.append(data)
        return ring


def complete_utf8(data: bytes) -> int:
    """Length of ``data`` without a trailing, incomplete UTF-8 sequence (to hold back)."""
    n = len(data)
    for back in range(1, min(4, n) + 1):
        byte = data[n - back]
        if byte & 0xC0 != 0x80:  # a lead byte (or ASCII): does its sequence fit?
            need = 1 if byte < 0x80 else 2 if byte >> 5 == 0x6 else 3 if byte >> 4 == 0xE else 4
            if byte >= 0x80 and byte >> 3 > 0x1E:
                return n  # not a valid lead byte: decoding will replace it anyway
            return n if back >= need else n - back
    return n


def decode_prefix(data: bytes, max_chars: int, final: bool = False) -> tuple[str, int]:
    """Decode at most ``max_chars`` characters from the front of ``data``: (text, bytes used).

    A trailing incomplete UTF-8 sequence is left for the next read unless ``final`` (no more
    bytes will ever come to complete it).
    """
    if len(data) <= max_chars:
        cut = len(data) if final else complete_utf8(data)
        return data[:cut].decode("utf-8", errors="replace"), cut
    # Each character takes 1-4 bytes (an undecodable byte becomes one character): the longest
    # byte prefix that decodes to at most max_chars characters lies in this range.
    low, high = max_chars, min(len(data), max_chars * 4)
    while low < high:
        mid = (low + high + 1) // 2
        if len(data[: complete_utf8(data[:mid])].decode("utf-8", errors="replace")) <= max_chars:
            low = mid
        else:
            high = mid - 1
    cut = complete_utf8(data[:low])
    return data[:cut].decode("utf-8", errors="replace"), cut
