"""Metering samples to API messages: a None datum stays an unset optional field."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

from engine.api import grove_pb2 as pb
from engine.errors import invalid
from engine.metering.sample import (
    HOST_FIELDS,
    SANDBOX_FIELDS,
    HostSample,
    Reading,
    SandboxSample,
)
from engine.sandbox.phase import Phase
from engine.store.records import SandboxRecord

if TYPE_CHECKING:
    from engine.daemon import Engine


def sandbox(sample: SandboxSample) -> pb.SandboxMetering:
    message = pb.SandboxMetering(
        id=sample.id,
        name=sample.name,
        phase=sample.phase,
        sampled_at=sample.sampled_at,
        template_id=sample.template_id or "",
    )
    for name in SANDBOX_FIELDS:
        value = getattr(sample, name)
        if value is not None:
            setattr(message, name, value)
    return message


def without_data(record: SandboxRecord) -> pb.SandboxMetering:
    """A sandbox the sampler does not measure (terminated): identity only, every datum unset."""
    return pb.SandboxMetering(
        id=record.id,
        name=record.name,
        phase=record.phase.value,
        template_id=record.template_id or "",
    )


def host(sample: HostSample) -> pb.HostMetering:
    message = pb.HostMetering(sandboxes_running=sample.sandboxes_running)
    for name in HOST_FIELDS:
        value = getattr(sample, name)
        if value is not None:
            setattr(message, name, value)
    return message


def top(reading: Reading, interval_s: float, extra: Iterable[SandboxRecord] = ()) -> pb.TopReply:
    reply = pb.TopReply(
        sampled_at=reading.sampled_at, host=host(reading.host), interval_s=interval_s
    )
    reply.sandboxes.extend(sandbox(s) for s in reading.sandboxes)
    reply.sandboxes.extend(without_data(r) for r in extra)
    return reply


def history(
    sandbox_id: str, samples: Iterable[SandboxSample], interval_s: float
) -> pb.HistoryReply:
    reply = pb.HistoryReply(sandbox_id=sandbox_id, interval_s=interval_s)
    reply.samples.extend(sandbox(s) for s in samples)
    return reply


# What the servicer calls: each takes the engine and returns messages.


async def top_reply(engine: Engine, include_terminated: bool) -> pb.TopReply:
    records = engine.sandboxes.records(include_terminated=include_terminated)
    live = frozenset((r.id, r.phase.value) for r in records if r.phase is not Phase.TERMINATED)
    # A sample older than the last create/stop/terminate would list the wrong sandboxes.
    reading = await engine.meter.current(live)
    ended = [r for r in records if r.phase is Phase.TERMINATED]
    return top(reading, engine.meter.interval_s, ended)


async def watch(
    engine: Engine, include_terminated: bool, interval_s: float
) -> AsyncIterator[pb.TopReply]:
    if interval_s < 0:
        raise invalid(f"invalid interval {interval_s}", "pass a positive number of seconds")
    with engine.meter.subscribe() as readings:
        first = await top_reply(engine, include_terminated)
        yield first
        last = first.sampled_at
        async for reading in readings:
            # Paced by sample time, with half a tick of slack: a 1 s watch of a 1 s sampler
            # gets every sample, a 5 s watch every fifth.
            if reading.sampled_at - last < interval_s - engine.meter.interval_s / 2:
                continue
            last = reading.sampled_at
            ended = (
                [r for r in engine.sandboxes.records(True) if r.phase is Phase.TERMINATED]
                if include_terminated
                else []
            )
            yield top(reading, engine.meter.interval_s, ended)


def history_reply(engine: Engine, ref: str) -> pb.HistoryReply:
    record = engine.sandboxes.get(ref)
    return history(record.id, engine.meter.history(record.id), engine.meter.interval_s)
