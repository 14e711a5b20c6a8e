"""Snapshots by name, and freeing what no sandbox or snapshot needs (gc.needed decides)."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from engine.config import Paths
from engine.errors import GroveError
from engine.fork import gc
from engine.images.templates import Templates
from engine.sandbox.pool import WarmPool
from engine.secrets.keeper import SecretKeeper
from engine.store.db import Store
from engine.store.records import TemplatePhase, TemplateRecord

log = logging.getLogger(__name__)


class Collector:
    def __init__(
        self,
        paths: Paths,
        store: Store,
        templates: Templates,
        warm: WarmPool,
        secrets: SecretKeeper,
    ) -> None:
        self._paths = paths
        self._secrets = secrets
        self._store = store
        self._templates = templates
        self._pool = warm
        self._background: set[asyncio.Task[None]] = set()

    def snapshot_by_name(self, name: str) -> TemplateRecord:
        for template in self._store.list_templates():
            if template.name == name and template.phase is TemplatePhase.READY:
                return template
        raise GroveError(
            "snapshot_not_found",
            f"no snapshot named '{name}'",
            "list snapshots with 'grove snapshot ls'",
        )

    def snapshots(self, source_id: str = "") -> list[TemplateRecord]:
        return [
            t
            for t in self._store.list_templates()
            if t.name
            and t.phase is TemplatePhase.READY
            and (not source_id or t.source_sandbox == source_id)
        ]

    def dependents(self, template_id: str) -> list[str]:
        return gc.dependents(
            template_id, self._store.list_templates(), self._store.list_sandboxes()
        )

    def delete_snapshot(self, name: str) -> TemplateRecord:
        template = self.snapshot_by_name(name)
        users = self.dependents(template.id)
        if users:
            raise GroveError(
                "snapshot_in_use",
                f"snapshot {name} is still needed by {', '.join(users)}",
                "terminate those sandboxes (or reset them elsewhere) first",
            )
        self._drop_template(template.id)
        self.collect()
        return template

    def _drop_template(self, template_id: str) -> None:
        template = self._store.get_template(template_id)
        if template is None:
            return
        _drop_memory(template)
        self._secrets.wipe(template_id)
        shutil.rmtree(self._paths.template_dir(template_id), ignore_errors=True)
        # A snapshot's disk is the source's frozen layer, unless a sandbox still writes it.
        writing = {r.disk_path for r in self._store.list_sandboxes()}
        if template.kind == "snapshot" and template.disk_path not in writing:
            Path(template.disk_path).unlink(missing_ok=True)
        self._store.delete_template(template_id)

    def collect(self) -> list[str]:
        """Free what no sandbox or snapshot needs: whole snapshot templates, or just the
        memory and state of one whose frozen disk layer is still under a sandbox."""
        templates = self._store.list_templates()
        whole, disk_only = gc.needed(templates, self._store.list_sandboxes())
        freed: list[str] = []  # template ids whose memory went
        for template in templates:
            if template.id in whole:
                continue
            if template.kind == "environment":
                if template.id not in disk_only:
                    self._templates.remove(template)
                    freed.append(template.id)
            elif template.id in disk_only:
                if template.phase is TemplatePhase.READY:
                    _drop_memory(template)
                    self._secrets.wipe(template.id)  # only its memory held them
                    shutil.rmtree(self._paths.template_dir(template.id), ignore_errors=True)
                    self._store.update_template(template.id, phase=TemplatePhase.LAYER)
                    freed.append(template.id)
            else:
                self._drop_template(template.id)
                freed.append(template.id)
        for template_id in freed:
            # Warm targets map the memory just freed: end them too.
            task = asyncio.get_running_loop().create_task(self._pool.drop(template_id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        if freed:
            log.info("collected %s", ", ".join(freed))
        return freed

    async def release_template(self, template_id: str) -> None:
        await self._pool.drop(template_id)


def _drop_memory(template: TemplateRecord) -> None:
    """A template's own memory file goes with it; a delta's is its base's (gc keeps that).
    A delta's state (its own pages) is on tmpfs beside the memory files and goes too."""
    if template.mem_base is None:
        Path(template.mem_path).unlink(missing_ok=True)
    elif template.state_path:  # '' while a capture is still building it
        Path(template.state_path).unlink(missing_ok=True)
