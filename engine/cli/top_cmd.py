"""grove top: what each sandbox really costs (CoW-aware), once or redrawn in place."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.cli.context import Context
from engine.cli.output import emit_json, iec, table
from engine.client import HostMeter, MeterSample, SandboxMeter
from engine.errors import invalid


def reply_dict(reply: MeterSample, rows: Sequence[SandboxMeter]) -> dict[str, Any]:
    return {**reply.to_json(), "sandboxes": [s.to_json() for s in rows]}


@dataclass(frozen=True)
class Column:
    header: str
    field: str  # "" for identity columns read from the message directly
    render: Callable[[Any], str]
    numeric: bool = True
    #: A second field shown after the first ("rx/tx"); the column sorts by the first.
    also: str = ""

    def cell(self, row: SandboxMeter) -> str:
        first = getattr(row, self.field)
        if not self.also:
            return self.render(first)
        second = getattr(row, self.also)
        if first is None and second is None:
            return "-"
        return f"{self.render(first)}/{self.render(second)}"

    @property
    def names(self) -> tuple[str, ...]:
        """What --sort accepts for it: its header (with and without %, or its first word),
        its fields."""
        fields = [_normalize(f) for f in (self.field, self.also) if f]
        return (self.header, self.header.rstrip("%"), self.header.split(" ")[0], *fields)


def _cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


COLUMNS = (
    Column("ID", "id", str, numeric=False),
    Column("NAME", "name", str, numeric=False),
    Column("PHASE", "phase", str, numeric=False),
    Column("UNIQUE-MEM", "unique_mem_bytes", iec),
    Column("SHARED-MEM", "shared_mem_bytes", iec),
    Column("VMM", "vmm_overhead_bytes", iec),
    Column("UNIQUE-DISK", "unique_disk_bytes", iec),
    Column("SHARED-DISK", "shared_disk_bytes", iec),
    Column("CPU%", "cpu_percent", _cpu),
    Column("NET RX/TX", "net_rx_bytes", iec, also="net_tx_bytes"),
)


def _normalize(name: str) -> str:
    return name.strip().upper().replace("_", "-").removesuffix("-BYTES")


def sort_column(name: str) -> Column:
    """A column by its header, case-insensitively; CPU and CPU% are the same column."""
    wanted = _normalize(name)
    for column in COLUMNS:
        if wanted in column.names:
            return column
    raise invalid(
        f"unknown sort column '{name}'",
        "sort by one of: " + ", ".join(c.header for c in COLUMNS),
    )


def sorted_rows(rows: Sequence[SandboxMeter], column: Column | None) -> list[SandboxMeter]:
    if column is None:
        return list(rows)
    if not column.numeric:
        return sorted(rows, key=lambda s: str(getattr(s, column.field)))
    # Largest first, like top; rows with no datum go last whatever the order.
    have = [s for s in rows if getattr(s, column.field) is not None]
    missing = [s for s in rows if getattr(s, column.field) is None]
    return sorted(have, key=lambda s: getattr(s, column.field), reverse=True) + missing


def render(reply: MeterSample, rows: Sequence[SandboxMeter]) -> str:
    cells = [[c.cell(s) for c in COLUMNS] for s in rows]
    body = (
        table([c.header for c in COLUMNS], cells)
        if cells
        else "no sandboxes; create one with 'grove sandbox create debian:12'"
    )
    return body + "\n\n" + host_summary(reply.host)


def _ratio(part: int | None, whole: int | None) -> str:
    if part is None or not whole:
        return "-"
    return f"{part / whole:.2f}"


def _saving(saved: int | None, naive: int | None) -> str:
    if saved is None or not naive:
        return iec(saved)
    return f"{iec(saved)} ({saved / naive * 100:.0f}%)"


def host_summary(host: HostMeter) -> str:
    naive, cow = host.naive_mem_bytes, host.cow_aware_mem_bytes
    dnaive, dcow = host.naive_disk_bytes, host.cow_aware_disk_bytes
    cpu = host.cpu_percent
    cores = host.cpu_count
    rows = [
        [
            "memory",
            iec(naive),
            iec(cow),
            _saving(host.saved_mem_bytes, naive),
            _ratio(cow, naive),
        ],
        [
            "disk",
            iec(dnaive),
            iec(dcow),
            _saving(host.saved_disk_bytes, dnaive),
            _ratio(dcow, dnaive),
        ],
    ]
    lines = [
        f"HOST  {host.sandboxes_running} running  CPU {_cpu(cpu)}%"
        + (f" of {cores} cores" if cores else "")
        + f"  templates in RAM {iec(host.template_mem_bytes)}",
        table(["", "NAIVE", "COW-AWARE", "SAVED", "RATIO"], rows),
        "naive: every QEMU's RSS and every full disk chain added up (what ps/du would say);",
        "CoW-aware: unique pages + VMM overhead + each shared template or layer once.",
    ]
    return "\n".join(lines)


def top(ctx: Context) -> int:
    a = ctx.args
    column = sort_column(a.sort) if a.sort else None
    if a.interval is not None and not a.interval > 0:
        raise invalid(f"invalid interval {a.interval}", "pass --interval S with S > 0")
    interval = a.interval or 1.0
    if not a.watch:
        reply = ctx.client.top(all=a.all)
        rows = sorted_rows(reply.sandboxes, column)
        if ctx.json:
            emit_json(reply_dict(reply, rows))
        else:
            print(render(reply, rows))
        return 0
    return _watch(ctx, interval, column)


def _watch(ctx: Context, interval: float, column: Column | None) -> int:
    tty = sys.stdout.isatty() and not ctx.json
    try:
        if tty:
            sys.stdout.write("\x1b[?25l")  # no cursor flicker while redrawing
        for reply in ctx.across_drops(
            lambda: ctx.client.watch_metering(interval, all=ctx.args.all)
        ):
            rows = sorted_rows(reply.sandboxes, column)
            if ctx.json:
                # One object per line: a stream other programs can read line by line.
                sys.stdout.write(json.dumps(reply_dict(reply, rows)) + "\n")
            else:
                stamp = time.strftime("%H:%M:%S", time.localtime(reply.sampled_at or time.time()))
                frame = (
                    f"grove top  every {interval:g}s  sampled {stamp}"
                    "  (Ctrl+C to quit)\n\n" + render(reply, rows)
                )
                if tty:
                    # Home, then overwrite each line and clear what the last frame left below.
                    lines = frame.split("\n")
                    sys.stdout.write("\x1b[H" + "\x1b[K\n".join(lines) + "\x1b[K\n\x1b[J")
                else:
                    sys.stdout.write(frame + "\n\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        if tty:
            sys.stdout.write("\x1b[?25h")
            sys.stdout.flush()
    return 0
