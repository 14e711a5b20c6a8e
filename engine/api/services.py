"""Services over the API: requests to specs, services to messages, logs in batches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from engine.api import grove_pb2 as pb
from engine.errors import invalid
from engine.services.service import Service
from engine.services.spec import (
    DEFAULT_INTERVAL_MS,
    DEFAULT_READY_TIMEOUT_S,
    PortRequest,
    Probe,
    ServiceSpec,
)

if TYPE_CHECKING:
    from engine.services.manager import Services

DEFAULT_TAIL = 100


def spec(request: pb.ServiceStartRequest) -> ServiceSpec:
    probe = None
    if request.HasField("ready") and (request.ready.kind or request.ready.target):
        probe = Probe(request.ready.kind, request.ready.target)
    return ServiceSpec(
        name=request.name,
        argv=list(request.argv),
        cwd=request.cwd,
        env=dict(request.env),
        probe=probe,
        ready_timeout_s=request.ready_timeout_s or DEFAULT_READY_TIMEOUT_S,
        interval_ms=request.ready_interval_ms or DEFAULT_INTERVAL_MS,
        restart=request.restart or "no",
        publish=[PortRequest(p.guest_port, p.host_port) for p in request.publish],
        secret_env=list(request.secret_env),
    ).validate()


def info(service: Service) -> pb.ServiceInfo:
    data = service.describe()
    message = pb.ServiceInfo(
        sandbox_id=data["sandbox_id"],
        name=data["name"],
        state=data["state"],
        pid=data["pid"] or 0,
        ready=data["ready"],
        published_ports=[pb.PublishedPort(**p) for p in data["published_ports"]],
        restarts=data["restarts"],
        restart=data["restart"],
        signal=data["signal"] or "",
        error=data["error"],
        started_at=data["started_at"] or 0.0,
        ready_at=data["ready_at"] or 0.0,
        ready_ms=data["ready_ms"] or 0.0,
        argv=data["argv"],
        cwd=data["cwd"],
        probe=data["probe"] or "",
    )
    if data["exit_code"] is not None:
        message.exit_code = data["exit_code"]
    return message


async def logs(
    services: Services, request: pb.ServiceLogsRequest
) -> AsyncIterator[pb.ServiceLogBatch]:
    if request.tail < 0:
        raise invalid(f"invalid --tail {request.tail}", "pass a positive number of lines or --all")
    if request.since < 0:
        raise invalid("invalid --since", "pass a time such as 10m or 2024-05-01T12:00:00")
    tail = None if request.all else (request.tail or DEFAULT_TAIL)
    if request.since and not request.tail:
        tail = None  # --since alone: everything after it
    async for batch in services.logs(
        request.sandbox, request.name, tail=tail, since=request.since or None,
        follow=request.follow,
    ):  # fmt: skip
        yield pb.ServiceLogBatch(
            lines=[
                pb.ServiceLogLine(ts=line.ts, stream=line.stream, text=line.text) for line in batch
            ]
        )
