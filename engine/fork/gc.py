"""Which frozen templates are still needed; the rest are garbage.

A template is needed while a sandbox maps its memory (template_id), sits on its disk layer
(disk_base), may be reset to it (origin), or while it is a named snapshot or an environment's
boot template. Disk layers chain, so whatever a needed template's disk backs onto is needed too.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.sandbox.phase import Phase
from engine.store.records import SandboxRecord, TemplateRecord


def references(sandbox: SandboxRecord) -> set[str]:
    refs = {sandbox.template_id, sandbox.extra.get("disk_base"), sandbox.extra.get("origin")}
    return {r for r in refs if r}


def needed(templates: Iterable[TemplateRecord], sandboxes: Iterable[SandboxRecord]) -> set[str]:
    by_id = {t.id: t for t in templates}
    keep: set[str] = set()
    for sandbox in sandboxes:
        if sandbox.phase is not Phase.TERMINATED:
            keep |= references(sandbox)
    for template in by_id.values():
        if template.kind == "environment" or template.phase == "building":
            keep.add(template.id)
        elif template.name and template.phase == "ready":
            keep.add(template.id)
    stack = list(keep)
    while stack:
        current = by_id.get(stack.pop())
        if current is not None and current.parent_id and current.parent_id not in keep:
            keep.add(current.parent_id)
            stack.append(current.parent_id)
    return keep


def dependents(
    template_id: str, templates: Iterable[TemplateRecord], sandboxes: Iterable[SandboxRecord]
) -> list[str]:
    """What would break if this template went away."""
    found = [
        s.id
        for s in sandboxes
        if s.phase is not Phase.TERMINATED
        and template_id in (s.template_id, s.extra.get("disk_base"), s.extra.get("origin"))
    ]
    found += [t.id for t in templates if t.parent_id == template_id]
    return sorted(found)
