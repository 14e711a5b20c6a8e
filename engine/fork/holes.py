"""Holes in frozen template files: filled before a fork, given back after it.

A full-RAM copy reads every page of the source's template through its mapping, so before a
capture the template file's holes are allocated in one go (faulting them in one by one inside
the source's pause is what makes a pause slow; the transaction then also maps every page into
the source, see pagemap.map_in), and a full copy writes zero pages into its new file. Both
give their zero pages back (``fallocate --dig-holes``, at idle priority) as soon as the
children run: until then the host's copy-on-write total counts them, and the source's file is
fully resident. A fill waits for a dig still running on the same file. Only frozen template
files are dug; a live guest's own RAM file could race with its writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from engine.vmm import memfile

# Seconds a source's template stays filled after a fork (a burst of forks could skip the
# refill). 0: dug at once; since every page is mapped into the source before each pause, the
# next pause takes no fault either way (2-core TCG host: pause p50 151 ms, dug after every
# fork; 416 ms when digging made the next pause fault them back in).
DIG_DELAY_S = float(os.environ.get("GROVE_DIG_DELAY", "0"))


class Holes:
    def __init__(self) -> None:
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._digging: dict[str, asyncio.Task[None]] = {}
        self._used: dict[str, int] = {}  # bytes a file holds once dug, while it is filled
        # The holes a fill allocated (still zero: the file is frozen), punched again by offset
        # when the fork is done: no second read of the whole file.
        self._filled: dict[str, list[tuple[int, int]]] = {}

    async def fill(self, path: str) -> None:
        timer = self._timers.pop(path, None)
        if timer is not None:
            timer.cancel()
        digging = self._digging.get(path)
        if digging is not None:  # let it finish, or the pause faults in what it just freed
            with contextlib.suppress(Exception):
                await digging
        if timer is None:  # not filled by an earlier fork: what it holds now is its use
            self._used[path] = memfile.allocated(Path(path))
            self._filled[path] = memfile.holes(Path(path))
        await memfile.fill(Path(path))

    def used_bytes(self, path: str) -> int:
        """What a file holds with its zero pages given back (also while a fork has it filled)."""
        if path in self._timers or path in self._digging:
            return self._used.get(path, memfile.allocated(Path(path)))
        return memfile.allocated(Path(path))

    def dig_later(self, path: str, delay: float = DIG_DELAY_S) -> None:
        timer = self._timers.pop(path, None)
        if timer is not None:
            timer.cancel()

        def dig() -> None:
            self._timers.pop(path, None)
            filled = self._filled.pop(path, None)
            task = asyncio.create_task(
                memfile.dig(Path(path))
                if filled is None
                else asyncio.to_thread(memfile.punch, Path(path), filled)
            )
            self._digging[path] = task
            task.add_done_callback(lambda _t: self._digging.pop(path, None))

        self._timers[path] = asyncio.get_running_loop().call_later(delay, dig)

    async def dig_now(self, paths: list[str]) -> None:
        """Engine stop: whatever is still filled is given back before the engine goes."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        await asyncio.gather(*self._digging.values(), return_exceptions=True)
        self._filled.clear()
        for path in paths:
            await memfile.dig(Path(path))
