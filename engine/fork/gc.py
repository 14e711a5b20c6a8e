"""Which frozen templates are still needed; the rest are garbage.

A template is needed while a sandbox maps its memory (template_id), sits on its disk layer
(disk_base), may be reset to it (origin), while it is a named snapshot or an environment's
boot template, or while a needed delta snapshot maps its memory file (mem_base). Disk layers
chain, so whatever a needed template's disk backs onto is needed too.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.sandbox.phase import Phase
from engine.store.records import SandboxRecord, TemplatePhase, TemplateRecord


def needed(
    templates: Iterable[TemplateRecord], sandboxes: Iterable[SandboxRecord]
) -> tuple[set[str], set[str]]:
    """(whole, disk_only): templates still needed entirely, and those whose memory can go
    because only their frozen disk layer is still under someone."""
    by_id = {t.id: t for t in templates}
    whole: set[str] = set()
    disk: set[str] = set()
    for sandbox in sandboxes:
        if sandbox.phase is Phase.TERMINATED:
            continue
        for ref in (sandbox.template_id, sandbox.origin):
            if ref:
                whole.add(ref)
        if sandbox.disk_base:
            disk.add(sandbox.disk_base)
    newest: dict[tuple[str, int, int], TemplateRecord] = {}
    for template in by_id.values():
        if template.kind == "environment" and template.phase is TemplatePhase.READY:
            key = (template.environment, template.vcpus, template.mem_mib)
            if key not in newest or template.created_at > newest[key].created_at:
                newest[key] = template
    for template in by_id.values():
        named = template.name and template.phase is TemplatePhase.READY
        if template.phase is TemplatePhase.BUILDING or named:
            whole.add(template.id)
    # An environment's current boot template stays warm; older ones (from a previous image
    # or agent) go once nothing restores from them.
    whole |= {t.id for t in newest.values()}
    # A delta snapshot reads the pages it does not hold from its base's memory file.
    whole |= {by_id[t].mem_base or t for t in whole if t in by_id}
    stack = list(whole | disk)
    seen = set(stack)
    while stack:
        current = by_id.get(stack.pop())
        if current is not None and current.parent_id and current.parent_id not in seen:
            seen.add(current.parent_id)
            disk.add(current.parent_id)
            stack.append(current.parent_id)
    return whole, disk - whole


def dependents(
    template_id: str, templates: Iterable[TemplateRecord], sandboxes: Iterable[SandboxRecord]
) -> list[str]:
    """What would break if this template went away."""
    found = [
        s.id
        for s in sandboxes
        if s.phase is not Phase.TERMINATED and template_id in (s.template_id, s.disk_base, s.origin)
    ]
    found += [t.id for t in templates if template_id in (t.parent_id, t.mem_base)]
    return sorted(found)
