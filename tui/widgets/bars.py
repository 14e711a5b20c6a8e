"""One-line bars: the engine header, the activity line and the host summary."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from tui import format as fmt
from tui.models import EngineInfo, HostTotals


class EngineHeader(Static):
    """grove · engine pid · accelerator · host · state. No clock: the screen stays still."""

    def show(
        self,
        info: EngineInfo | None,
        state: str,
        read_only: bool = False,
        where: str = "",
    ) -> None:
        parts: list[Content] = [Content.from_markup("[b $primary] grove [/]")]
        if info is None:
            parts.append(Content.from_markup("[$warning]$state[/]", state=state))
            if where:
                parts.append(Content(where))
        else:
            parts.append(Content.from_markup("engine pid [b]$pid[/]", pid=str(info.pid)))
            accel = Content.from_markup("[b]$a[/]", a=info.accelerator or "-")
            if info.accelerator_reason:
                accel += Content(f" ({_brief(info.accelerator_reason)})")
                self.tooltip = f"{info.accelerator}: {info.accelerator_reason}"
            parts.append(accel)
            host = []
            if info.host_cpus:
                host.append(f"{info.host_cpus} CPU")
            if info.host_mem_bytes:
                host.append(fmt.size(info.host_mem_bytes))
            if host:
                parts.append(Content("host " + " · ".join(host)))
            parts.append(Content.from_markup("[b]$n[/] running", n=str(info.sandboxes_running)))
            if state:
                parts.append(Content.from_markup("[$warning]$state[/]", state=state))
        if read_only:
            parts.append(Content.from_markup("[b $error]READ-ONLY[/]"))
        self.update(Content(" │ ").join(parts))


class ActivityLine(Static):
    """The current long operation (an environment pull, a demo step); hidden when idle."""

    def show(self, text: str | None, fraction: float | None = None) -> None:
        self.display = text is not None
        if text is None:
            return
        if fraction is None:
            self.update(Content.from_markup("[b $accent]⟳[/] $text", text=text))
            return
        width = 24
        filled = round(max(0.0, min(1.0, fraction)) * width)
        bar = "█" * filled + "░" * (width - filled)
        self.update(
            Content.from_markup(
                "[b $accent]⟳[/] $text  [$accent]$bar[/] $pct",
                text=text, bar=bar, pct=f"{fraction * 100:3.0f}%",
            )
        )


class HostBar(Static):
    """Host totals, naive (every process's resident memory) vs CoW-aware (shared pages once)."""

    def show(self, host: HostTotals | None, sandboxes: int, running: int, note: str = "") -> None:
        counts = Content.from_markup("[b]$n[/] sandboxes, [b]$r[/] running",
                                     n=str(sandboxes), r=str(running))
        if host is None:
            parts = [Content.from_markup("[b]host[/]"), counts]
            if note:
                parts.append(Content.from_markup("[dim]$note[/]", note=note))
            self.update(Content(" │ ").join(parts))
            return
        mem = Content.from_markup(
            "mem [b $grove-shared]$cow[/] CoW-aware · $naive naive$saving",
            cow=fmt.size(host.mem_cow),
            naive=fmt.size(host.mem_naive),
            saving=_saving(host.mem_cow, host.mem_naive),
        )
        disk = Content.from_markup(
            "disk [b $grove-shared]$cow[/] · $naive naive",
            cow=fmt.size(host.disk_cow),
            naive=fmt.size(host.disk_naive),
        )
        cpu = Content.from_markup("CPU [b $grove-cpu]$cpu[/]", cpu=fmt.percent(host.cpu_percent))
        running_of = Content.from_markup("[b]$r[/]/$n running", r=str(running), n=str(sandboxes))
        self.update(
            Content(" │ ").join([Content.from_markup("[b]host[/]"), mem, disk, cpu, running_of])
        )


def _brief(reason: str, limit: int = 36) -> str:
    """The gist of the accelerator reason; the whole of it is in the header's tooltip."""
    gist = reason.split(":", 1)[0].strip()
    return gist if len(gist) <= limit else gist[: limit - 1] + "…"


def _saving(cow: int | None, naive: int | None) -> str:
    if cow is None or not naive:
        return ""
    # With one sandbox the template's shared pages can outweigh its own: CoW costs more.
    change = (cow - naive) / naive * 100
    return f" ({change:+.0f}%)"
