"""Sparklines of the selected sandbox's unique memory and CPU over the last minute."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import Sparkline, Static

from tui import format as fmt


class UsagePanel(Horizontal):
    def compose(self) -> ComposeResult:
        with Vertical(id="mem-usage", classes="usage"):
            yield Static(id="mem-label", classes="usage-label")
            yield Sparkline([], summary_function=max, id="mem-spark")
        with Vertical(id="cpu-usage", classes="usage"):
            yield Static(id="cpu-label", classes="usage-label")
            yield Sparkline([], summary_function=max, id="cpu-spark")

    def on_mount(self) -> None:
        self.show(None, [], [])

    def show(self, name: str | None, memory: Sequence[float], cpu: Sequence[float]) -> None:
        mem_now = fmt.size(int(memory[-1])) if memory else fmt.DASH
        cpu_now = fmt.percent(cpu[-1]) if cpu else fmt.DASH
        who = name or "no sandbox selected"
        self.query_one("#mem-label", Static).update(
            Content.from_markup("[b]memory[/] unique · $who  [b $grove-unique]$v[/]",
                                who=who, v=mem_now)
        )
        self.query_one("#cpu-label", Static).update(
            Content.from_markup("[b]CPU[/] · $who  [b $grove-cpu]$v[/]", who=who, v=cpu_now)
        )
        # No data draws nothing rather than a flat line that would read as zero.
        for spark_id, data in (("#mem-spark", memory), ("#cpu-spark", cpu)):
            spark = self.query_one(spark_id, Sparkline)
            spark.display = bool(data)
            spark.data = list(data)
