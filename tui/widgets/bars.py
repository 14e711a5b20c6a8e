"""One-line bars: the engine header, the activity line, the file transfer line and the host
(or fleet) summary."""

from __future__ import annotations

from dataclasses import replace

from textual.content import Content
from textual.reactive import reactive
from textual.widgets import Static

from tui import format as fmt
from tui.models import EngineInfo, HostTotals
from tui.state import DashboardState, HostState, Link
from tui.state.transfer import Transfer
from tui.widgets.redraws import Redraws

LINK_STYLE = {
    Link.CONNECTED: "$success",
    Link.CONNECTING: "$warning",
    Link.RECONNECTING: "$warning",
    Link.UNREACHABLE: "$error",
}


class EngineHeader(Static, Redraws):
    """grove · engine pid · accelerator · host · state, or for a fleet: its hosts' states.
    No clock: the screen stays still."""

    hosts_rev: reactive[int] = reactive(0, init=False)

    def __init__(self, state: DashboardState, read_only: bool = False, *, id: str | None = None):
        super().__init__(id=id)
        self.state = state
        self.read_only = read_only

    def on_mount(self) -> None:
        self.draw()

    def draw(self) -> None:
        hosts = self.state.shown_hosts()
        if len(hosts) == 1:
            host = hosts[0]
            state = "" if host.connected else _link_text(host)
            total = len(self.state.hosts)
            note = f"showing 1 of {total} hosts · H shows all" if total > 1 else ""
            info = host.info
            if info is not None:  # the count as the watch has it now, not as at connect
                running = sum(1 for s in host.sandboxes.values() if s.phase == "running")
                info = replace(info, sandboxes_running=running)
            self.show(info if host.connected else None, state, self.read_only, host.where, note)
            return
        parts: list[Content] = [Content.from_markup("[b $primary] grove [/]")]
        total = len(self.state.hosts)
        shown = "" if len(hosts) == total else f" (showing {len(hosts)} of {total})"
        parts.append(Content.from_markup("[b]$n[/] hosts$s", n=str(total), s=shown))
        for host in hosts:
            style = LINK_STYLE[host.link]
            parts.append(
                Content.from_markup(
                    f"$name [{style}]$link[/]", name=host.name, link=host.link.value
                )
            )
        if self.read_only:
            parts.append(Content.from_markup("[b $error]READ-ONLY[/]"))
        self.update(Content(" │ ").join(parts), layout=False)

    def show(
        self,
        info: EngineInfo | None,
        state: str,
        read_only: bool = False,
        where: str = "",
        note: str = "",
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
        if note:
            parts.append(Content.from_markup("[dim]$note[/]", note=note))
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


class TransferLine(Static, Redraws):
    """The file transfer: 'push ./proj → /root/proj  42%  12.0/28.5 MiB  9.1 MiB/s' while it
    runs, then what it did or why it failed; hidden when there is none."""

    transfer_rev: reactive[int] = reactive(0, init=False)

    def __init__(self, state: DashboardState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state

    def on_mount(self) -> None:
        self.draw()

    def draw(self) -> None:
        transfer = self.state.transfer
        self.display = transfer is not None
        self.set_class(transfer is not None and transfer.error is not None, "-failed")
        if transfer is not None:
            self.update(transfer_text(transfer), layout=False)


def transfer_text(t: Transfer) -> Content:
    route = f"{t.direction} {t.source} → {t.dest}"
    if t.error is not None:
        return Content.from_markup("[b]✗[/] $route failed: $why", route=route, why=t.error)
    speed = rate(t.rate)
    if t.result is not None:
        r = t.result
        verb = "pushed" if r.direction == "push" else "pulled"
        files = f"{r.files} file{'s' if r.files != 1 else ''}"
        took = f" in {r.elapsed:.1f} s" if r.elapsed is not None else ""
        return Content.from_markup(
            "[b $success]✓[/] $verb $files to $dest  [dim]$size$took$speed[/]",
            verb=verb,
            files=files,
            dest=r.dest,
            size=fmt.size(r.bytes),
            took=took,
            speed=f", {speed}" if speed else "",
        )
    p, fraction = t.progress, t.fraction
    if p is None or fraction is None or p.total is None:
        stage = p.stage if p is not None else "starting"
        return Content.from_markup(
            "[b $accent]⟳[/] $route  [dim]$stage…[/]", route=route, stage=stage
        )
    return Content.from_markup(
        "[b $accent]⟳[/] $route  [b]$pct[/]  $amount$speed",
        route=route,
        pct=f"{fraction * 100:.0f}%",
        amount=amount(p.done, p.total),
        speed=f"  {speed}" if speed else "",
    )


def rate(per_second: float | None) -> str:
    """'9.1 MiB/s', or '' when not known yet."""
    return f"{fmt.size(round(per_second))}/s" if per_second is not None else ""


def amount(done: int, total: int) -> str:
    """'12.0/28.5 MiB': both in the total's unit."""
    unit, scale = "B", 1
    for name in ("KiB", "MiB", "GiB", "TiB"):
        if total < scale * 1024:
            break
        unit, scale = name, scale * 1024
    if unit == "B":
        return f"{done}/{total} B"
    return f"{done / scale:.1f}/{total / scale:.1f} {unit}"


class HostBar(Static, Redraws):
    """Host totals on two aligned lines: memory and disk, CoW-aware (shared pages and layers
    counted once) against naive (every process and disk chain counted in full), and the saving.
    A fleet sums the hosts that answer and adds a line of per-host figures.
    """

    meters_rev: reactive[int] = reactive(0, init=False)
    hosts_rev: reactive[int] = reactive(0, init=False)

    def __init__(self, state: DashboardState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state

    def on_mount(self) -> None:
        self.set_class(len(self.state.hosts) > 1, "-fleet")
        self.draw()

    def draw(self) -> None:
        fleet = self.state.fleet()
        label = "fleet" if len(self.state.hosts) > 1 else "host"
        fleet_mode = len(self.state.hosts) > 1
        lines = self.summary(
            fleet.host,
            fleet.sandboxes,
            fleet.running,
            self.state.metering_note(),
            label,
            counts_apart=fleet_mode,
        )
        if fleet_mode:
            per_host = Content(" · ").join(_host_figure(h) for h in self.state.shown_hosts())
            counts = Content.from_markup(
                "[b]$r[/]/$n running", r=str(fleet.running), n=str(fleet.sandboxes)
            )
            lines.append(Content("hosts  ") + per_host + Content("   ") + counts)
        # Fixed height: no layout pass for an update every second.
        self.update(Content("\n").join(lines), layout=False)

    @staticmethod
    def summary(
        host: HostTotals | None,
        sandboxes: int,
        running: int,
        note: str = "",
        label: str = "host",
        counts_apart: bool = False,
    ) -> list[Content]:
        """Memory and disk lines; the sandbox counts end the second one unless `counts_apart`."""
        counts = Content.from_markup(
            "[b]$r[/] of $n sandboxes running", r=str(running), n=str(sandboxes)
        )
        if counts_apart:
            counts = Content("")
        if host is None:
            first = Content.from_markup(
                "[b]$label[/]  [dim]$note[/]",
                label=label,
                note=note or "waiting for the first metering sample",
            )
            return [first, Content(" " * (len(label) + 2)) + counts]
        cores = f" of {host.cpu_count} cores" if host.cpu_count else ""
        cpu = Content.from_markup(
            "CPU [b $grove-cpu]$cpu[/]$cores", cpu=fmt.percent(host.cpu_percent), cores=cores
        )
        mem = _line(
            f"[b]{label}[/]  memory",
            host.mem_cow,
            host.mem_naive,
            host.mem_saved,
            host.template_mem,
        )
        disk = _line(" " * (len(label) + 2) + "disk  ", host.disk_cow, host.disk_naive, None)
        return [mem + "   " + cpu, disk + "   " + counts]


def _link_text(host: HostState) -> str:
    if host.link is Link.CONNECTING:
        return "connecting to the engine…"
    why = f": {host.error.message}" if host.error is not None else ""
    return f"{host.link.value}{why} · r reconnects"


def _host_figure(host: HostState) -> Content:
    """'b 212 MiB of 8 GiB (3 sandboxes)', or its state when it does not answer."""
    if not host.connected:
        style = LINK_STYLE[host.link]
        why = f" ({_clip(host.error.message, 40)})" if host.error is not None else ""
        return Content.from_markup(
            f"$name [{style}]$link[/][dim]$why[/]", name=host.name, link=host.link.value, why=why
        )
    totals = host.meters.host
    mem = fmt.size(totals.mem_cow if totals is not None else None)
    return Content.from_markup(
        "$name [b $grove-shared]$mem[/] ($n)", name=host.name, mem=mem, n=str(len(host.sandboxes))
    )


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


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
