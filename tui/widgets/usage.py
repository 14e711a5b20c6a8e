"""The selected sandbox: sparklines of its unique memory and CPU, its network policy and
its services."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.reactive import reactive
from textual.widgets import Sparkline, Static

from tui import format as fmt
from tui.models import ServiceInfo
from tui.state import DashboardState, split
from tui.widgets.redraws import Redraws

_SERVICE_STYLE = {
    "running": "$grove-running",
    "starting": "$grove-pending",
    "backoff": "$grove-pending",
    "failed": "$grove-failed",
}


class UsagePanel(Horizontal, Redraws):
    meters_rev: reactive[int] = reactive(0, init=False)
    selection_rev: reactive[int] = reactive(0, init=False)
    services_rev: reactive[int] = reactive(0, init=False)
    #: The inventory: the sandbox's network policy can change with no new sample.
    tree_rev: reactive[int] = reactive(0, init=False)

    def __init__(self, state: DashboardState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state

    def draw(self) -> None:
        key = self.state.selected
        sandbox = self.state.sandbox(key) if key is not None else None
        host = self.state.host(key) if key is not None else None
        if sandbox is None or host is None or key is None:
            self.show(None, [], [])
            return
        sandbox_id = split(key)[1]
        self.show(
            sandbox.label,
            host.meters.memory(sandbox_id),
            host.meters.cpu(sandbox_id),
            host.services.get(sandbox_id),
            sandbox.network,
        )

    def compose(self) -> ComposeResult:
        with Vertical(id="mem-usage", classes="usage"):
            yield Static(id="mem-label", classes="usage-label")
            yield Sparkline([], summary_function=max, id="mem-spark")
        with Vertical(id="cpu-usage", classes="usage"):
            yield Static(id="cpu-label", classes="usage-label")
            yield Sparkline([], summary_function=max, id="cpu-spark")

    def on_mount(self) -> None:
        self.draw()

    def show(
        self,
        name: str | None,
        memory: Sequence[float],
        cpu: Sequence[float],
        services: Sequence[ServiceInfo] | None = None,
        network: str = "",
    ) -> None:
        mem_now = fmt.size(int(memory[-1])) if memory else fmt.DASH
        cpu_now = fmt.percent(cpu[-1]) if cpu else fmt.DASH
        who = name or "no sandbox selected"
        # One-line labels: no layout pass for an update every second.
        self.query_one("#mem-label", Static).update(
            Content.from_markup(
                "[b]memory[/] unique · $who  [b $grove-unique]$v[/]", who=who, v=mem_now
            ),
            layout=False,
        )
        self.query_one("#cpu-label", Static).update(
            Content.from_markup("[b]CPU[/] · $who  [b $grove-cpu]$v[/]", who=who, v=cpu_now),
            layout=False,
        )
        self.border_subtitle = _subtitle(network, services) if name else ""
        # No data draws nothing rather than a flat line that would read as zero.
        for spark_id, data in (("#mem-spark", memory), ("#cpu-spark", cpu)):
            spark = self.query_one(spark_id, Sparkline)
            if spark.display != bool(data):
                spark.display = bool(data)
            spark.data = list(data)


def _subtitle(network: str, services: Sequence[ServiceInfo] | None) -> Content | str:
    """'net published · services: web ● ready'; each part only when known."""
    parts = [Content.from_markup("net [b]$policy[/]", policy=network)] if network else []
    listed = _services(services)
    if listed:
        parts.append(Content(listed) if isinstance(listed, str) else listed)
    return Content(" · ").join(parts) if parts else ""


def _services(services: Sequence[ServiceInfo] | None) -> Content | str:
    """'services: web ● ready · worker ○ stopped'; nothing when unknown or none."""
    if not services:
        return ""
    parts = []
    for service in services:
        style = _SERVICE_STYLE.get(service.state, "$grove-stopped")
        icon = "●" if service.active else "○"
        state = "ready" if service.ready and service.state == "running" else service.state
        parts.append(
            Content.from_markup(
                f"$name [{style}]$icon[/] $state", name=service.name, icon=icon, state=state
            )
        )
    return Content("services: ") + Content(" · ").join(parts)
