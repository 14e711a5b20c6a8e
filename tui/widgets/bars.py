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
            if where.startswith("ssh://"):  # a remote engine: say where it is
                parts.append(Content.from_markup("[b $accent]$where[/]", where=where))
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
        self.update(Content(" │ ").join(parts), layout=False)  # one fixed line


class ActivityLine(Static):
    """The current long operation (an environment pull, a demo step); hidden when idle."""

    def show(self, text: str | None, fraction: float | None = None) -> None:
        self.display = text is not None
        if text is None:
            return
        if fraction is None:
            self.update(Content.from_markup("[b $accent]⟳[/] $text", text=text), layout=False)
            return
        width = 24
        filled = round(max(0.0, min(1.0, fraction)) * width)
        bar = "█" * filled + "░" * (width - filled)
        self.update(
            Content.from_markup(
                "[b $accent]⟳[/] $text  [$accent]$bar[/] $pct",
                text=text,
                bar=bar,
                pct=f"{fraction * 100:3.0f}%",
            ),
            layout=False,
        )


class HostBar(Static):
    """Host totals on two aligned lines: memory and disk, CoW-aware (shared pages and layers
    counted once) against naive (every process and disk chain counted in full), and the saving.
    """

    def show(self, host: HostTotals | None, sandboxes: int, running: int, note: str = "") -> None:
        counts = Content.from_markup(
            "[b]$r[/] of $n sandboxes running", r=str(running), n=str(sandboxes)
        )
        if host is None:
            first = Content.from_markup(
                "[b]host[/]  [dim]$note[/]", note=note or "waiting for the first metering sample"
            )
            self.update(Content("\n").join([first, Content("      ") + counts]), layout=False)
            return
        cores = f" of {host.cpu_count} cores" if host.cpu_count else ""
        cpu = Content.from_markup(
            "CPU [b $grove-cpu]$cpu[/]$cores", cpu=fmt.percent(host.cpu_percent), cores=cores
        )
        mem = _line(
            "[b]host[/]  memory", host.mem_cow, host.mem_naive, host.mem_saved, host.template_mem
        )
        disk = _line("      disk  ", host.disk_cow, host.disk_naive, None)
        # Fixed height: no layout pass for an update every second.
        self.update(Content("\n").join([mem + "   " + cpu, disk + "   " + counts]), layout=False)


def _line(
    label: str,
    cow: int | None,
    naive: int | None,
    saved: int | None,
    templates: int | None = None,
) -> Content:
    return Content.from_markup(
        f"{label} [b $grove-shared]$cow[/] CoW-aware  $naive naive  ",
        cow=f"{fmt.size(cow):>9}",
        naive=f"{fmt.size(naive):>9}",
    ) + _saving(saved, cow, naive, templates)


def _brief(reason: str, limit: int = 36) -> str:
    """The gist of the accelerator reason; the whole of it is in the header's tooltip."""
    gist = reason.split(":", 1)[0].strip()
    return gist if len(gist) <= limit else gist[: limit - 1] + "…"


def _saving(
    saved: int | None, cow: int | None, naive: int | None, templates: int | None = None
) -> Content:
    """'saves  32.1 MiB (9%)': what sharing saves against every process counted in full."""
    width = 24
    if cow is None or not naive:
        return Content(" " * width)
    if saved is None:
        saved = naive - cow
    if saved <= 0:
        # Few sandboxes: the templates held in RAM (counted once, but counted; a sum of RSS
        # never sees them) outweigh what sharing saves so far. Said, not hidden.
        text = f"templates hold {fmt.size(templates)}" if templates else "no saving yet"
        return Content.from_markup("[dim]$t[/]", t=f"{text:<{width}}")
    percent = f"({saved / naive * 100:.0f}%)"
    return Content.from_markup(
        "saves [b $grove-shared]$s[/] $p", s=f"{fmt.size(saved):>9}", p=f"{percent:<{width - 16}}"
    )
