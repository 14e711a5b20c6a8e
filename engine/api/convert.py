"""Engine records to API messages."""

from __future__ import annotations

import json
from dataclasses import asdict

from engine import config
from engine.api import grove_pb2 as pb
from engine.files import limits as file_limits
from engine.fork import fsdiff, transaction
from engine.fork.lineage import Node
from engine.images.catalog import EnvironmentInfo, PullUpdate
from engine.net.status import NetworkInfo
from engine.store.records import EventRecord, SandboxRecord, TemplateRecord


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
        create_ms=record.create_ms,
        network=record.network,
        expires_at=record.expires_at or 0.0,
        secret_names=sorted(record.secret_digests),
    )


def network(info: NetworkInfo) -> pb.NetworkInfo:
    """A sandbox's network; a None datum (traffic, apply time) stays an unset field."""
    message = pb.NetworkInfo(
        sandbox_id=info.sandbox_id,
        policy=info.policy,
        backend=info.backend,
        guest_address=info.guest_address,
        namespace=info.namespace,
        host_address=info.host_address,
        pinned=list(info.pinned),
    )
    if info.rx_bytes is not None:
        message.rx_bytes = info.rx_bytes
    if info.tx_bytes is not None:
        message.tx_bytes = info.tx_bytes
    if info.applied_ms is not None:
        message.applied_ms = info.applied_ms
    return message


def event(record: EventRecord) -> pb.SandboxEvent:
    return pb.SandboxEvent(
        seq=record.seq,
        sandbox_id=record.sandbox_id,
        ts=record.ts,
        kind=record.kind,
        detail_json=json.dumps(record.detail),
    )


def limits() -> pb.Limits:
    return pb.Limits(
        max_fork_replicas=transaction.MAX_REPLICAS,
        max_vcpus=config.MAX_VCPUS,
        min_mem_mib=config.MIN_MEM_MIB,
        max_mem_mib=config.MAX_MEM_MIB,
        default_vcpus=config.DEFAULT_VCPUS,
        default_mem_mib=config.DEFAULT_MEM_MIB,
        max_push_bytes=file_limits.push_limit(),
        max_read_bytes=file_limits.MAX_READ_BYTES,
    )


def snapshot(template: TemplateRecord, dependents: list[str]) -> pb.Snapshot:
    return pb.Snapshot(
        name=template.name or "",
        id=template.id,
        source=template.source_sandbox or "",
        created_at=template.created_at,
        dependents=dependents,
        environment=template.environment,
        secret_names=sorted(template.secret_digests),
    )


def lineage(node: Node) -> pb.LineageNode:
    return pb.LineageNode(
        id=node.id,
        kind=node.kind,
        name=node.name,
        phase=node.phase,
        created_at=node.created_at,
        children=[lineage(c) for c in node.children],
    )


def diff(found: fsdiff.Diff) -> pb.DiffReply:
    return pb.DiffReply(
        sandbox=found.sandbox,
        against=found.against,
        changes=[pb.FileChange(**asdict(change)) for change in found.changes],
    )


def environment(info: EnvironmentInfo) -> pb.Environment:
    return pb.Environment(**asdict(info))


def pull_update(update: PullUpdate) -> pb.PullProgress:
    message = pb.PullProgress(
        stage=update.stage, fraction=update.fraction, done=update.done, cache_hit=update.cache_hit
    )
    if update.environment is not None:
        message.environment.CopyFrom(environment(update.environment))
    return message
