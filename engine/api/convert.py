"""Engine records to API messages."""

from __future__ import annotations

from engine.api import grove_pb2 as pb
from engine.store.records import SandboxRecord


def sandbox(record: SandboxRecord) -> pb.Sandbox:
    return pb.Sandbox(
        id=record.id,
        name=record.name,
        environment=record.environment,
        phase=record.phase.value,
        vcpus=record.vcpus,
        mem_mib=record.mem_mib,
        pid=record.pid or 0,
        created_at=record.created_at,
        updated_at=record.updated_at,
        parent_id=record.parent_id or "",
        template_id=record.template_id or "",
        error=record.error,
        has_secrets=record.secrets,
        create_ms=float(record.extra.get("create_ms", 0.0)),
    )
