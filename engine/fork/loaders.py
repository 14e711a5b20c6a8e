"""Warm fork loaders: a paused QEMU already listening for a source's memory.

With GROVE_WARM_LOADERS=1, after a sandbox of some size has been forked as a full copy once,
one loader for that size waits for the next full copy, so it only pays for the pause and the
restores. A waiting loader has its memory file already allocated (it holds the guest's memory
size in host RAM, for as long as it waits) and runs at idle priority. Off by default: most
forks are deltas, which need no loader, and a full copy starts its loader while its children
start, before the pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from engine.config import Paths
from engine.fork import capture
from engine.net.networks import Networks
from engine.store.records import SandboxRecord
from engine.vmm.accel import Accelerator

log = logging.getLogger(__name__)

Key = tuple[int, int, str, str, str]


class LoaderPool:
    def __init__(self, paths: Paths, accel: Accelerator, networks: Networks) -> None:
        self._networks = networks
        self._paths = paths
        self._accel = accel
        self.enabled = os.environ.get("GROVE_WARM_LOADERS", "0") == "1"
        self._ready: dict[Key, capture.Loader] = {}
        self._filling: dict[Key, asyncio.Task[None]] = {}

    def take(self, key: Key) -> capture.Loader | None:
        loader = self._ready.pop(key, None)
        if loader is None or not loader.vm.process.alive():
            return None
        loader.vm.process.set_background(False)
        return loader

    def refill(self, source: SandboxRecord) -> None:
        key = capture.loader_key(source)
        if not self.enabled or key in self._ready or key in self._filling:
            return
        task = asyncio.create_task(self._fill(key, source))
        self._filling[key] = task
        task.add_done_callback(lambda _t: self._filling.pop(key, None))

    async def _fill(self, key: Key, source: SandboxRecord) -> None:
        try:
            self._ready[key] = await capture.start_loader(
                self._paths, self._accel, source, self._networks.for_loader(), background=True
            )
        except Exception as exc:  # only the next fork's speed depends on it
            log.warning("could not pre-start a fork loader: %s", exc)

    async def close(self) -> None:
        for task in list(self._filling.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for loader in list(self._ready.values()):
            await capture.discard_loader(self._paths, loader)
        self._ready.clear()
