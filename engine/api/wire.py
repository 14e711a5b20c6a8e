"""Protobuf messages into the SDK's dataclasses (engine.client.models), in one place.

Proto3 has no "unset" for plain scalars: an empty string or a 0 the engine sends for "none"
becomes None here, and `optional` fields the engine left unset (no datum) become None too.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.message import Message

from engine.api import grove_pb2 as pb
from engine.client import models as m


def opt(message: Message, name: str) -> Any:
    """A proto3 `optional` field: None when the engine has no datum."""
    return getattr(message, name) if message.HasField(name) else None


def _s(text: str) -> str | None:
    return text or None


def _n(number: float) -> Any:
    return number or None


def engine_info(s: pb.EngineStatus) -> m.EngineInfo:
    return m.EngineInfo(
        pid=s.pid,
        socket=s.socket,
        accelerator=s.accelerator,
        accelerator_reason=s.accelerator_reason,
        home=s.home,
        version=s.version,
        started_at=s.started_at,
        sandboxes_running=s.sandboxes_running,
        api_version=s.api_version,
        limits=limits(s.limits) if s.HasField("limits") else None,
        network_backend=_s(s.network_backend),
        network_default=_s(s.network_default),
    )


def limits(x: pb.Limits) -> m.Limits:
    return m.Limits(
        max_fork_replicas=x.max_fork_replicas,
        max_vcpus=x.max_vcpus,
        min_mem_mib=x.min_mem_mib,
        max_mem_mib=x.max_mem_mib,
        default_vcpus=x.default_vcpus,
        default_mem_mib=x.default_mem_mib,
        max_push_bytes=x.max_push_bytes or None,
        max_read_bytes=x.max_read_bytes or None,
    )


def environment(e: pb.Environment) -> m.Environment:
    return m.Environment(
        name=e.name,
        description=e.description,
        cached=e.cached,
        recipe_hash=_s(e.recipe_hash),
        size_bytes=e.size_bytes if e.cached else None,
        created_at=_n(e.created_at),
        template_ready=e.template_ready,
        kernel=_s(e.kernel),
        initramfs=_s(e.initramfs),
        rootfs=_s(e.rootfs),
    )


def pull_progress(p: pb.PullProgress) -> m.PullProgress:
    return m.PullProgress(
        stage=p.stage,
        fraction=None if p.fraction < 0 else p.fraction,
        done=p.done,
        cache_hit=p.cache_hit,
        environment=environment(p.environment) if p.HasField("environment") else None,
    )


def prune_result(r: pb.PruneReply) -> m.PruneResult:
    return m.PruneResult(bytes_freed=r.bytes_freed, removed=tuple(r.removed))


def sandbox(s: pb.Sandbox) -> m.Sandbox:
    return m.Sandbox(
        id=s.id,
        name=s.name,
        environment=s.environment,
        phase=s.phase,
        vcpus=s.vcpus,
        mem_mib=s.mem_mib,
        pid=_n(s.pid),
        parent_id=_s(s.parent_id),
        created_at=s.created_at,
        updated_at=s.updated_at,
        template_id=_s(s.template_id),
        error=_s(s.error),
        has_secrets=s.has_secrets,
        create_ms=_n(s.create_ms),
        network=_s(s.network),
        expires_at=_n(s.expires_at),
        secret_names=tuple(s.secret_names),
    )


def network(n: pb.NetworkInfo) -> m.NetworkInfo:
    return m.NetworkInfo(
        sandbox_id=n.sandbox_id,
        policy=n.policy,
        backend=n.backend,
        guest_address=_s(n.guest_address),
        namespace=_s(n.namespace),
        host_address=_s(n.host_address),
        pinned=tuple(n.pinned),
        rx_bytes=opt(n, "rx_bytes"),
        tx_bytes=opt(n, "tx_bytes"),
        applied_ms=opt(n, "applied_ms"),
    )


def exec_exit(e: pb.ExecExit) -> m.ExecExit:
    return m.ExecExit(
        exit_code=e.exit_code,
        signal=_s(e.signal),
        timed_out=e.timed_out,
        duration_ms=e.duration_ms,
        network_note=_s(e.network_note),
    )


def event(e: pb.SandboxEvent) -> m.Event:
    try:
        detail = json.loads(e.detail_json) if e.detail_json else {}
    except ValueError:
        detail = {"raw": e.detail_json}
    if not isinstance(detail, dict):
        detail = {"value": detail}
    return m.Event(seq=e.seq, sandbox_id=e.sandbox_id, ts=e.ts, kind=e.kind, detail=detail)


def inventory_update(u: pb.InventoryUpdate) -> m.InventoryUpdate:
    return m.InventoryUpdate(
        cursor=u.cursor,
        full=u.full,
        sandboxes=tuple(sandbox(s) for s in u.sandboxes),
        removed=tuple(u.removed),
        events=tuple(event(e) for e in u.events),
        environments=(
            tuple(environment(e) for e in u.environments) if u.has_environments else None
        ),
        lineage=tuple(lineage_node(n) for n in u.lineage) if u.has_lineage else None,
    )


def fork_result(r: pb.ForkReply) -> m.ForkResult:
    return m.ForkResult(
        source=r.source,
        snapshot=r.snapshot,
        children=tuple(sandbox(c) for c in r.children),
        paused_ms=r.paused_ms,
        memory=r.memory,
    )


def snapshot(s: pb.Snapshot) -> m.Snapshot:
    return m.Snapshot(
        name=s.name,
        id=s.id,
        source=_s(s.source),
        created_at=s.created_at,
        dependents=tuple(s.dependents),
        environment=_s(s.environment),
        secret_names=tuple(s.secret_names),
    )


def lineage_node(n: pb.LineageNode) -> m.LineageNode:
    return m.LineageNode(
        id=n.id,
        kind=n.kind,
        name=n.name,
        phase=_s(n.phase),
        created_at=_n(n.created_at),
        children=tuple(lineage_node(c) for c in n.children),
    )


def file_change(c: pb.FileChange) -> m.FileChange:
    return m.FileChange(
        path=c.path,
        change=c.change,
        kind=c.kind,
        old_sha256=_s(c.old_sha256),
        new_sha256=_s(c.new_sha256),
        old_size=c.old_size if c.change != "added" else None,
        new_size=c.new_size if c.change != "deleted" else None,
        patch=_s(c.patch),
    )


def diff(d: pb.DiffReply) -> m.Diff:
    return m.Diff(
        sandbox=d.sandbox,
        against=d.against,
        changes=tuple(file_change(c) for c in d.changes),
    )


def _optional_fields(message: type[Message]) -> tuple[str, ...]:
    """The scalar fields that can be unset (proto3 `optional`): the metering data."""
    return tuple(
        f.name for f in message.DESCRIPTOR.fields if f.has_presence and f.message_type is None
    )


SANDBOX_METER_FIELDS = _optional_fields(pb.SandboxMetering)
HOST_METER_FIELDS = _optional_fields(pb.HostMetering)


def sandbox_meter(s: pb.SandboxMetering) -> m.SandboxMeter:
    data = {name: opt(s, name) for name in SANDBOX_METER_FIELDS}
    return m.SandboxMeter(
        id=s.id,
        name=s.name,
        phase=s.phase,
        template_id=_s(s.template_id),
        sampled_at=_n(s.sampled_at),
        **data,
    )


def host_meter(h: pb.HostMetering) -> m.HostMeter:
    data = {name: opt(h, name) for name in HOST_METER_FIELDS}
    return m.HostMeter(sandboxes_running=h.sandboxes_running, **data)


def meter_sample(r: pb.TopReply) -> m.MeterSample:
    return m.MeterSample(
        sampled_at=_n(r.sampled_at),
        interval_s=_n(r.interval_s),
        sandboxes=tuple(sandbox_meter(s) for s in r.sandboxes),
        host=host_meter(r.host),
    )


def meter_history(r: pb.HistoryReply) -> m.MeterHistory:
    return m.MeterHistory(
        sandbox_id=r.sandbox_id,
        interval_s=_n(r.interval_s),
        samples=tuple(sandbox_meter(s) for s in r.samples),
    )


def shell(i: pb.ShellInfo) -> m.Shell:
    return m.Shell(
        sandbox_id=i.sandbox_id,
        shell_id=i.shell_id,
        state=i.state,
        cols=i.cols,
        rows=i.rows,
        pid=_n(i.pid),
        argv=tuple(i.argv),
        cwd=_s(i.cwd),
        created_at=i.created_at,
        exit_code=opt(i, "exit_code"),
        signal=_s(i.signal),
        viewers=i.viewers,
        cursor=i.cursor,
    )


def shell_exit(e: pb.ShellExit) -> m.ShellExit:
    return m.ShellExit(exit_code=opt(e, "exit_code"), signal=_s(e.signal), state=e.state)


def shell_read(r: pb.ShellReadReply) -> m.ShellRead:
    return m.ShellRead(
        output=r.output,
        cursor=r.cursor,
        next_cursor=r.next_cursor,
        truncated=r.truncated,
        state=r.state,
    )


def service(i: pb.ServiceInfo) -> m.Service:
    return m.Service(
        sandbox_id=i.sandbox_id,
        name=i.name,
        state=i.state,
        pid=_n(i.pid),
        ready=i.ready,
        published_ports=tuple(
            m.PublishedPort(host=p.host, host_port=p.host_port, guest_port=p.guest_port)
            for p in i.published_ports
        ),
        restarts=i.restarts,
        restart=i.restart or "no",
        exit_code=opt(i, "exit_code"),
        signal=_s(i.signal),
        error=_s(i.error),
        started_at=_n(i.started_at),
        ready_at=_n(i.ready_at),
        ready_ms=_n(i.ready_ms),
        argv=tuple(i.argv),
        cwd=_s(i.cwd),
        probe=_s(i.probe),
    )


def log_line(line: pb.ServiceLogLine) -> m.LogLine:
    return m.LogLine(ts=line.ts, stream=line.stream, text=line.text)


def log_batch(batch: pb.ServiceLogBatch) -> list[m.LogLine]:
    return [log_line(line) for line in batch.lines]


def exec_output(message: pb.ExecOutput) -> m.ExecOutput | m.ExecExit | int:
    """One message of an exec stream: output, the exit, or (int) the started pid."""
    kind = message.WhichOneof("kind")
    if kind == "exit":
        return exec_exit(message.exit)
    if kind == "stdout":
        return m.ExecOutput(stream="stdout", data=message.stdout)
    if kind == "stderr":
        return m.ExecOutput(stream="stderr", data=message.stderr)
    return message.started_pid


def file_entry(e: pb.FileEntry) -> m.FileEntry:
    return m.FileEntry(
        path=e.path, type=e.type, size=e.size, mode=e.mode, mtime=e.mtime,
        link_target=_s(e.link_target),
    )  # fmt: skip


def file_read(path: str, r: pb.FileReadReply) -> m.FileRead:
    return m.FileRead(
        path=path, data=r.data, size=r.size, truncated=r.truncated, mode=r.mode, mtime=r.mtime
    )
