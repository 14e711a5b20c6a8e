"""Holes in frozen template files: filled before a fork, given back right after it.

A full-RAM copy reads every page of the source's template through its mapping and writes every
page of the new file, so before a capture both files are allocated in one call each
(``fallocate``): faulting 128k pages in one by one makes the copy several times slower on a
nested host. The copy runs while the guest runs, so none of this is inside the source's pause.
Once the children run, both files give their zero pages back (``fallocate --dig-holes``, at
idle priority): a template is fully resident only while a fork from it is under way. A fill
waits for a dig still running on the same file. Only frozen template files are dug; a live
guest's own RAM file could race with its writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from engine.fork import capture

# Seconds after a fork before a template gives its zero pages back. Measured on a 2-core TCG
# host, five forks 2 s apart: 0 s costs each fork about 100 ms more than 20 s (the next copy
# faults the pages back in) and saves 512 MiB of RAM for those 20 s.
DIG_DELAY_S = float(os.environ.get("GROVE_DIG_DELAY", "0"))


class Holes:
    def __init__(self) -> None:
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._digging: dict[str, asyncio.Task[None]] = {}

    async def fill(self, path: str) -> None:
        timer = self._timers.pop(path, None)
        if timer is not None:
            timer.cancel()
        digging = self._digging.get(path)
        if digging is not None:  # let it finish, or the pause faults in what it just freed
            with contextlib.suppress(Exception):
                await digging
        await capture.fill_holes(Path(path))

    def dig_later(self, path: str, delay: float = DIG_DELAY_S) -> None:
        timer = self._timers.pop(path, None)
        if timer is not None:
            timer.cancel()

        def dig() -> None:
            self._timers.pop(path, None)
            task = asyncio.create_task(capture.dig_holes(Path(path)))
            self._digging[path] = task
            task.add_done_callback(lambda _t: self._digging.pop(path, None))

        self._timers[path] = asyncio.get_running_loop().call_later(delay, dig)

    async def dig_now(self, paths: list[str]) -> None:
        """Engine stop: whatever is still filled is given back before the engine goes."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        await asyncio.gather(*self._digging.values(), return_exceptions=True)
        for path in paths:
            await capture.dig_holes(Path(path))
