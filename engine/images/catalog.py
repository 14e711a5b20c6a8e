"""Environments as the API shows them: known ones, cached layers, pulls with progress, prune."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from engine.config import DEFAULT_MEM_MIB, DEFAULT_VCPUS, Paths
from engine.images import environments
from engine.images.templates import Templates
from engine.sandbox.events import ENVIRONMENTS, EventLog
from engine.sandbox.manager import Sandboxes
from engine.store.db import Store
from engine.store.records import TemplatePhase
from guest.image import builder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnvironmentInfo:
    name: str
    description: str
    cached: bool = False
    recipe_hash: str = ""
    size_bytes: int = 0
    created_at: float = 0.0
    kernel: str = ""
    initramfs: str = ""
    rootfs: str = ""
    template_ready: bool = False


@dataclass(frozen=True)
class PullUpdate:
    stage: str
    fraction: float  # -1 when unknown
    done: bool = False
    cache_hit: bool = False
    environment: EnvironmentInfo | None = None


@dataclass(frozen=True)
class Pruned:
    bytes_freed: int
    removed: list[str]


class EnvironmentCatalog:
    def __init__(
        self,
        paths: Paths,
        store: Store,
        templates: Templates,
        sandboxes: Sandboxes,
        events: EventLog,
    ) -> None:
        self._paths = paths
        self._store = store
        self._templates = templates
        self._sandboxes = sandboxes
        self._events = events

    def _changed(self, *_: object) -> None:
        # Not a sandbox event: watchers (WatchInventory) hear of it on the bus.
        self._events.notify(ENVIRONMENTS)

    def load_image(self, name: str) -> asyncio.Task[environments.EnvironmentImage]:
        task = asyncio.create_task(
            asyncio.to_thread(environments.build, name, str(self._paths.home), None, False)
        )
        task.add_done_callback(self._changed)  # a create may have built it
        return task

    def _info(self, name: str) -> EnvironmentInfo:
        image = environments.cached(str(self._paths.home), name)
        description = environments.describe(name)
        if image is None:
            return EnvironmentInfo(name=name, description=description)
        return EnvironmentInfo(
            name=name,
            description=description,
            cached=True,
            recipe_hash=image.recipe_hash,
            size_bytes=environments.image_size(image),
            created_at=image.created,
            kernel=str(image.kernel),
            initramfs=str(image.initramfs),
            rootfs=str(image.rootfs),
            template_ready=any(
                t.environment == name
                and t.phase is TemplatePhase.READY
                and t.image_hash == image.recipe_hash
                for t in self._store.list_templates()
            ),
        )

    async def list(self) -> list[EnvironmentInfo]:
        return [await asyncio.to_thread(self._info, n) for n in environments.known_environments()]

    async def inspect(self, name: str) -> EnvironmentInfo:
        environments.validate_name(name)
        return await asyncio.to_thread(self._info, name)

    async def pull(self, name: str, force: bool, warm: bool) -> AsyncIterator[PullUpdate]:
        environments.validate_name(name)
        loop = asyncio.get_running_loop()
        updates: asyncio.Queue[PullUpdate] = asyncio.Queue()

        def progress(stage: str, fraction: float | None) -> None:
            update = PullUpdate(stage=stage, fraction=-1.0 if fraction is None else fraction)
            loop.call_soon_threadsafe(updates.put_nowait, update)

        home = str(self._paths.home)
        cached = await asyncio.to_thread(environments.cached, home, name)
        task = asyncio.create_task(
            asyncio.to_thread(environments.build, name, home, progress, force)
        )
        # The image is in the cache once the build ends, whether or not the caller stayed.
        task.add_done_callback(self._changed)
        while not task.done():
            getter = asyncio.create_task(updates.get())
            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
            else:
                getter.cancel()
        while not updates.empty():
            yield updates.get_nowait()
        image = task.result()
        if warm:
            record = await self._templates.ensure(
                image, DEFAULT_VCPUS, DEFAULT_MEM_MIB, progress=progress
            )
            while not updates.empty():
                yield updates.get_nowait()
            log.info("template %s ready for %s", record.id, name)
            self._changed()
        yield PullUpdate(
            stage="ready",
            fraction=1.0,
            done=True,
            cache_hit=cached is not None and not force,
            environment=await asyncio.to_thread(self._info, name),
        )

    async def prune(self) -> Pruned:
        try:
            return await self._prune()
        finally:
            self._changed()  # even a prune cut short may have removed some

    async def _prune(self) -> Pruned:
        # Templates no live or stopped sandbox restores from are dropped with their memory.
        in_use = {
            r.template_id
            for r in self._sandboxes.records(include_terminated=False)
            if r.template_id
        }
        removed: list[str] = []
        for template in self._store.list_templates():
            if template.id not in in_use:
                await self._sandboxes.release_template(template.id)
                self._templates.remove(template)
                removed.append(template.id)
        # Layers behind a kept template's disk chain stay, even if their environment moved on.
        kept = self._store.list_templates()
        keep = [Path(t.disk_path) for t in kept]
        keep += [Path(t.boot.get("kernel", "")) for t in kept]
        keep += [Path(t.boot.get("initrd", "")) for t in kept]
        freed = await asyncio.to_thread(builder.prune, self._paths.home, keep)
        return Pruned(bytes_freed=freed, removed=removed)
