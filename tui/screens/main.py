"""The dashboard screen: lineage tree, metering table, host bar, sparklines, logs and shells.

All engine work runs in workers; results come back as messages (tui.messages) and the
handlers only touch widgets. A refresh replaces data, never the selection or the focus.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from itertools import count
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.validation import Integer
from textual.widgets import DataTable, Footer, Input, TabbedContent, TabPane, Tree
from textual.worker import Worker, WorkerState

from engine.errors import GroveError
from tui import format as fmt
from tui.engine.gateway import NOT_SUPPORTED, derive_lineage, parse_command, parse_probe
from tui.messages import (
    ActionDone,
    ActionFailed,
    Activity,
    EngineConnected,
    EngineLost,
    EngineStatus,
    EventsReceived,
    HistoryLoaded,
    InventoryLoaded,
    MeteringUnavailable,
    MeteringUpdated,
    ServicesLoaded,
)
from tui.metering import MeterHistory
from tui.models import (
    EngineInfo,
    EnvironmentInfo,
    EventInfo,
    LineageNode,
    SandboxInfo,
    ServiceInfo,
)
from tui.palette import Palette
from tui.screens.dialogs import AskScreen, ChooseScreen, ConfirmScreen, ServiceScreen
from tui.widgets.bars import ActivityLine, EngineHeader, HostBar
from tui.widgets.lineage_tree import LineageTree, visible_nodes
from tui.widgets.log_view import LogPane
from tui.widgets.metering_table import MeteringTable, MeterRow
from tui.widgets.service_logs import ServiceLogPane
from tui.widgets.shells import ShellsPane, ShellView
from tui.widgets.usage import UsagePanel

if TYPE_CHECKING:
    from tui.app import GroveApp

#: Actions that change sandboxes: disabled in read-only mode.
MUTATING = frozenset(
    {
        "create",
        "terminate",
        "stop",
        "start",
        "fork",
        "snapshot",
        "reset",
        "open_shell",
        "start_service",
        "stop_service",
    }
)
EVENT_FLUSH = 0.05
NEW_SHELL = "+new"


def format_event(event: EventInfo, label: str) -> str:
    stamp = time.strftime("%m-%d %H:%M:%S", time.localtime(event.ts))
    detail = " ".join(
        f"{k}={json.dumps(v) if isinstance(v, list | dict) else v}" for k, v in event.detail.items()
    )
    return f"{stamp}  {label:<14} {event.kind:<11} {detail}".rstrip()


def attach_sandboxes(nodes: list[LineageNode], sandboxes: list[SandboxInfo]) -> list[LineageNode]:
    """The engine's lineage names sandboxes; the table needs their details. A sandbox the
    lineage does not mention yet (created between the two calls) goes under its environment."""
    by_id = {s.id: s for s in sandboxes}
    seen = {n.id for n in nodes}
    attached = [replace(n, sandbox=by_id.get(n.id)) if n.kind == "sandbox" else n for n in nodes]
    environments = {n.label: n.id for n in nodes if n.kind == "environment"}
    for sandbox in sandboxes:
        if sandbox.id not in seen:
            parent = (
                sandbox.parent_id
                if sandbox.parent_id in seen
                else environments.get(sandbox.environment, "")
            )
            attached.append(
                LineageNode(sandbox.id, "sandbox", sandbox.label, parent, sandbox.phase, sandbox)
            )
    return attached


def _event_key(event: EventInfo) -> tuple[float, int]:
    return (event.ts, event.seq)


class MainScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "create", "Create", tooltip="Create a sandbox from an environment"),
        Binding("d", "terminate", "Terminate", tooltip="Destroy the selected sandbox"),
        Binding("x", "stop", "Stop", tooltip="Stop the sandbox (its disk is kept)"),
        Binding("u", "start", "Start", tooltip="Start a stopped sandbox from its disk"),
        Binding("o", "open_shell", "Shell", tooltip="Open a shell, or attach to a running one"),
        Binding("F", "fork", "Fork", tooltip="Snapshot-fork the sandbox into N children"),
        Binding(
            "P",
            "snapshot",
            "Snapshot",
            show=False,
            tooltip="Take a named snapshot (a lineage node)",
        ),
        Binding(
            "R",
            "reset",
            "Reset",
            show=False,
            tooltip="Reset to a named snapshot, or to how it was created",
        ),
        Binding("v", "start_service", "Service", tooltip="Start a service in the sandbox"),
        Binding(
            "V",
            "stop_service",
            "Stop service",
            show=False,
            tooltip="Stop one of the sandbox's services",
        ),
        Binding(
            "L",
            "service_logs",
            "Service log",
            show=False,
            tooltip="Follow a service's log in a tab",
        ),
        Binding(
            "C",
            "close_tab",
            "Close tab",
            show=False,
            tooltip="Close the shell or log tab (a shell keeps running)",
        ),
        Binding(
            "slash",
            "filter",
            "Filter",
            key_display="/",
            tooltip="Filter the tree and table (name, id, phase, env)",
        ),
        Binding("s", "sort", "Sort", show=False, tooltip="Sort the table by the next column"),
        Binding("S", "reverse_sort", "Reverse sort", show=False),
        Binding(
            "r",
            "reconnect",
            "Refresh",
            show=False,
            tooltip="Refresh now (reconnect if the engine was lost)",
        ),
        Binding("l", "show_logs", "Events", show=False, tooltip="Show the lifecycle events"),
        Binding("h", "show_shells", "Shells", show=False, tooltip="Show the shell tabs"),
        Binding(
            "z", "zoom", "Zoom", show=False, tooltip="Zoom: logs and shells take the whole screen"
        ),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.info: EngineInfo | None = None
        self.environments: list[EnvironmentInfo] = []
        self.sandboxes: dict[str, SandboxInfo] = {}
        self.lineage: list[LineageNode] = []
        self.meters = MeterHistory()
        self.selected_id: str | None = None
        self.filter_text = ""
        self.connected = False
        self.metering_note = ""
        self._lineage_supported = True
        self._refreshing = False
        self._refresh_again = False
        self._want_selected: str | None = None
        self._refresh_timer: Timer | None = None
        self._metering: Worker[None] | None = None
        self._followers: dict[str, Worker[None]] = {}
        self._event_buffer: list[EventInfo] = []
        self._event_log: list[EventInfo] = []
        self._event_seq: dict[str, int] = {}
        self._flush_timer: Timer | None = None
        self._last_error: tuple[str, str] | None = None
        self._demo_done = False
        self.services: dict[str, list[ServiceInfo]] = {}
        self._services_supported = True
        self._history_supported = True
        self._log_tabs = count(1)

    @property
    def grove(self) -> GroveApp:
        from tui.app import GroveApp

        assert isinstance(self.app, GroveApp)
        return self.app

    # -- layout

    def compose(self) -> ComposeResult:
        yield EngineHeader(id="header")
        yield ActivityLine(id="activity")
        yield Input(
            placeholder="filter sandboxes by name, id, phase or environment (esc clears)",
            id="filter",
        )
        with Horizontal(id="body"):
            yield LineageTree(id="lineage")
            with Vertical(id="main"):
                yield MeteringTable(now=self.grove.now, id="metering")
                yield HostBar(id="host")
                yield UsagePanel(id="usage")
        with TabbedContent(id="bottom", initial="logs"):
            with TabPane("Events", id="logs"):
                yield LogPane("events", id="events")
            with TabPane("Shells", id="shells"):
                yield ShellsPane(id="shell-pane")
        yield Footer()

    @property
    def lineage_tree(self) -> LineageTree:
        return self.query_one(LineageTree)

    @property
    def metering_table(self) -> MeteringTable:
        return self.query_one(MeteringTable)

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.query_one(ActivityLine).show(None)
        self.query_one("#lineage", LineageTree).border_title = "lineage"
        self.query_one("#metering", MeteringTable).border_title = "metering"
        self.query_one("#usage").border_title = "selected sandbox"
        self.restyle()
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.restyle())
        self._header("connecting to the engine…")
        self.query_one(HostBar).show(None, 0, 0)
        self.metering_table.focus()
        self.connect_engine()

    def restyle(self) -> None:
        """Rich-text colours follow the theme; CSS handles the rest."""
        palette = Palette(self.app.theme_variables or self.app.get_css_variables())
        self.lineage_tree.restyle(palette)
        self.metering_table.restyle(palette)

    def _header(self, state: str = "") -> None:
        self.query_one(EngineHeader).show(
            self.info if self.connected else None,
            state,
            read_only=self.grove.read_only,
            where=self.grove.gateway.description,
        )

    # -- engine connection and refresh

    @work(exclusive=True, group="connect", exit_on_error=False)
    async def connect_engine(self) -> None:
        gateway = self.grove.gateway
        try:
            await gateway.connect()
            info = await gateway.status()
        except GroveError as exc:
            self.post_message(EngineLost(exc))
            return
        self.post_message(EngineConnected(info))

    @on(EngineConnected)
    def _connected(self, message: EngineConnected) -> None:
        self.connected = True
        self.info = message.info
        self._last_error = None
        self._header()
        if self._refresh_timer is None and self.grove.refresh_interval:
            self._refresh_timer = self.set_interval(
                self.grove.refresh_interval, self.refresh_inventory
            )
        self.refresh_inventory()
        if self._metering is None or self._metering.is_finished:
            self._metering = self.consume_metering()
        if self.grove.demo and not self._demo_done:
            self._demo_done = True
            self.run_demo()

    @on(EngineLost)
    def _lost(self, message: EngineLost) -> None:
        self.connected = False
        self._header("engine unreachable · r reconnects")
        self._report(message.error, "engine")

    @on(EngineStatus)
    def _status(self, message: EngineStatus) -> None:
        self.info = message.info
        self._header()

    def refresh_inventory(self) -> None:
        if self._refreshing:
            self._refresh_again = True  # something changed mid-refresh: look once more after
            return
        if self.connected:
            self._refreshing = True
            self._refresh_worker()
        elif self.info is not None:
            # Lost after having worked: probe quietly (the channel reconnects by itself when
            # the engine is back); never auto-start an engine someone stopped on purpose.
            self._refreshing = True
            self._probe_worker()

    @work(group="refresh", exit_on_error=False)
    async def _probe_worker(self) -> None:
        try:
            info = await self.grove.gateway.status()
        except GroveError:
            return
        finally:
            self._refreshing = False
        self.post_message(EngineConnected(info))

    @work(group="refresh", exit_on_error=False)
    async def _refresh_worker(self) -> None:
        gateway = self.grove.gateway
        try:
            info = await gateway.status()
            environments = await gateway.list_environments()
            sandboxes = await gateway.list_sandboxes()
            lineage = await self._lineage(environments, sandboxes)
        except GroveError as exc:
            self.post_message(EngineLost(exc))
            return
        finally:
            self._refreshing = False
            if self._refresh_again:
                self._refresh_again = False
                self.call_later(self.refresh_inventory)
        self.post_message(EngineStatus(info))
        self.post_message(InventoryLoaded(environments, sandboxes, lineage))

    async def _lineage(
        self, environments: list[EnvironmentInfo], sandboxes: list[SandboxInfo]
    ) -> list[LineageNode]:
        if self._lineage_supported:
            try:
                nodes = await self.grove.gateway.lineage()
            except GroveError as exc:
                if exc.code != NOT_SUPPORTED:
                    raise
                self._lineage_supported = False  # ask once; derive from parent ids from now on
            else:
                return attach_sandboxes(nodes, sandboxes)
        return derive_lineage(environments, sandboxes)

    @on(InventoryLoaded)
    def _inventory(self, message: InventoryLoaded) -> None:
        self.environments = message.environments
        self.sandboxes = {s.id: s for s in message.sandboxes}
        self.lineage = message.lineage
        self.meters.forget(set(self.sandboxes))
        for gone in [k for k in self.services if k not in self.sandboxes]:
            del self.services[gone]
        self._follow_events()
        self._show()
        if self.selected_id in self.sandboxes:
            self._load_services(self.selected_id)

    def _show(self) -> None:
        nodes = visible_nodes(self.lineage, self.filter_text)
        shown = [n.sandbox for n in nodes if n.sandbox is not None]
        needle = self.filter_text.lower().strip()
        if needle:
            # The table lists the matches themselves, not the ancestors kept for context.
            shown = [
                s
                for s in shown
                if any(needle in f.lower() for f in (s.label, s.id, s.phase, s.environment))
            ]
        self.lineage_tree.show(self.lineage, self.filter_text)
        self.metering_table.show(
            [MeterRow(s, self.meters.latest.get(s.id), i) for i, s in enumerate(shown)]
        )
        running = sum(1 for s in self.sandboxes.values() if s.phase == "running")
        self.query_one(HostBar).show(
            self.meters.host, len(self.sandboxes), running, self.metering_note
        )
        if self._want_selected in self.sandboxes:
            self.select(self._want_selected)
        if self.selected_id is None or self.selected_id not in self.sandboxes:
            self.selected_id = self.metering_table.selected_sandbox
            self.lineage_tree.select_sandbox(self.selected_id)
            self._selection_changed()
        self._show_usage()

    def _show_usage(self) -> None:
        sandbox = self.sandboxes.get(self.selected_id or "")
        panel = self.query_one(UsagePanel)
        if sandbox is None:
            panel.show(None, [], [])
            return
        panel.show(
            sandbox.label,
            self.meters.memory(sandbox.id),
            self.meters.cpu(sandbox.id),
            self.services.get(sandbox.id),
        )

    def _selection_changed(self) -> None:
        """A new sandbox is selected: give its sparklines a past, and list its services."""
        sandbox_id = self.selected_id
        if sandbox_id is None or not self.connected:
            return
        if self._history_supported and sandbox_id not in self.meters.seeded:
            self.meters.seeded.add(sandbox_id)  # ask once per sandbox
            self._load_history(sandbox_id)
        self._load_services(sandbox_id)

    @work(group="history", exit_on_error=False)
    async def _load_history(self, sandbox_id: str) -> None:
        try:
            samples = await self.grove.gateway.metering_history(sandbox_id)
        except GroveError as exc:
            if exc.code == NOT_SUPPORTED:
                self._history_supported = False
            return  # a sparkline without a past is no reason to bother anyone
        self.post_message(HistoryLoaded(sandbox_id, samples))

    @on(HistoryLoaded)
    def _history_loaded(self, message: HistoryLoaded) -> None:
        if self.meters.seed(message.sandbox_id, message.samples):
            self._show_usage()

    @work(group="services", exclusive=True, exit_on_error=False)
    async def _load_services(self, sandbox_id: str) -> None:
        if not self._services_supported or self.sandboxes.get(sandbox_id) is None:
            return
        try:
            services = await self.grove.gateway.list_services(sandbox_id)
        except GroveError as exc:
            if exc.code == NOT_SUPPORTED:
                self._services_supported = False
            return
        self.post_message(ServicesLoaded(sandbox_id, services))

    @on(ServicesLoaded)
    def _services_loaded(self, message: ServicesLoaded) -> None:
        self.services[message.sandbox_id] = message.services
        if message.sandbox_id == self.selected_id:
            self._show_usage()

    # -- metering

    @work(group="metering", exit_on_error=False)
    async def consume_metering(self) -> None:
        try:
            async for sample in self.grove.gateway.metering_stream(self.grove.meter_interval):
                self.meters.add(sample)
                self.post_message(MeteringUpdated())
        except GroveError as exc:
            self.post_message(MeteringUnavailable(exc))

    @on(MeteringUpdated)
    def _metering_updated(self) -> None:
        self._show()

    @on(MeteringUnavailable)
    def _metering_unavailable(self, message: MeteringUnavailable) -> None:
        if message.error.code == NOT_SUPPORTED:
            self.metering_note = "metering: not available from this engine yet"
        else:
            self.metering_note = "metering: stream lost"
            self._report(message.error, "metering")
        self._show()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # GroveErrors are handled where they happen; anything else is a bug, shown not fatal.
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            error = event.worker.error
            self._report(
                GroveError(
                    "internal",
                    f"{type(error).__name__}: {error}",
                    "please report this with the steps that led to it",
                ),
                "finish a background task",
            )

    # -- lifecycle events (one follower per live sandbox; the engine streams per sandbox)

    def _follow_events(self) -> None:
        for sandbox_id in list(self._followers):
            if sandbox_id not in self.sandboxes:
                self._followers.pop(sandbox_id).cancel()
        for sandbox_id in self.sandboxes:
            follower = self._followers.get(sandbox_id)
            if follower is None or follower.is_finished:  # new, or its stream broke
                self._followers[sandbox_id] = self.run_worker(
                    self._follow(sandbox_id), group="events", exit_on_error=False
                )

    async def _follow(self, sandbox_id: str) -> None:
        after = self._event_seq.get(sandbox_id, 0)  # resume where a broken stream stopped
        try:
            async for event in self.grove.gateway.events(sandbox_id, follow=True, after=after):
                self._event_seq[sandbox_id] = max(event.seq, self._event_seq.get(sandbox_id, 0))
                self._queue_event(event)
        except GroveError as exc:
            if not exc.code.endswith("_not_found"):  # it was terminated meanwhile: fine
                self._report(exc, "events")

    def _queue_event(self, event: EventInfo) -> None:
        # Batch: a replay of history arrives as hundreds of events in one go.
        self._event_buffer.append(event)
        if self._flush_timer is None:
            self._flush_timer = self.set_timer(EVENT_FLUSH, self._flush_events)

    def _flush_events(self) -> None:
        self._flush_timer = None
        batch, self._event_buffer = self._event_buffer, []
        if batch:
            self.post_message(EventsReceived(sorted(batch, key=_event_key)))

    @on(EventsReceived)
    def _events(self, message: EventsReceived) -> None:
        pane = self.query_one(LogPane)
        batch = message.events
        in_order = not self._event_log or _event_key(batch[0]) >= _event_key(self._event_log[-1])
        self._event_log.extend(batch)
        if in_order:
            pane.write_lines(self._format_events(batch))
            return
        # Followers replay history concurrently: keep the log in time order.
        self._event_log.sort(key=_event_key)
        del self._event_log[: -pane.view.max_lines]
        pane.view.clear()
        pane.write_lines(self._format_events(self._event_log))

    def _format_events(self, events: list[EventInfo]) -> list[str]:
        lines = []
        for event in events:
            sandbox = self.sandboxes.get(event.sandbox_id)
            lines.append(format_event(event, sandbox.label if sandbox else event.sandbox_id))
        return lines

    # -- selection: tree and table follow each other

    # Highlight events arrive after the fact: one that no longer matches its widget's cursor
    # is an echo of an earlier move (a rebuild, or following the other widget). Acting on it
    # would make the tree and the table chase each other.

    @on(Tree.NodeHighlighted, "#lineage")
    def _tree_highlighted(self, event: Tree.NodeHighlighted[LineageNode]) -> None:
        node = event.node.data
        if event.node is not self.lineage_tree.cursor_node:
            return
        if node is not None and node.kind == "sandbox":
            self._select(node.id, source="tree")

    @on(DataTable.RowHighlighted, "#metering")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value
        if key and key == self.metering_table.selected_sandbox:
            self._select(key, source="table")

    def _select(self, sandbox_id: str, source: str) -> None:
        if sandbox_id == self.selected_id:
            return
        self.selected_id = sandbox_id
        if source != "tree":
            self.lineage_tree.select_sandbox(sandbox_id)
        if source != "table":
            self.metering_table.select_sandbox(sandbox_id)
        self._selection_changed()
        self._show_usage()

    def select(self, sandbox_id: str) -> None:
        """Select a sandbox from code (the demo): tree and table follow, now or once it is
        listed (it may have been created a moment ago)."""
        if sandbox_id in self.sandboxes:
            self._want_selected = None
            self._select(sandbox_id, source="code")
        else:
            self._want_selected = sandbox_id

    @property
    def selected(self) -> SandboxInfo | None:
        return self.sandboxes.get(self.selected_id or "")

    # -- filter

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        self._show()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        self.metering_table.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if box.display:
            box.value = ""
            box.display = False
            self.filter_text = ""
            self._show()
            self.metering_table.focus()

    # -- sorting, tabs

    def action_sort(self) -> None:
        self.metering_table.cycle_sort()

    def action_reverse_sort(self) -> None:
        table = self.metering_table
        table.sort_by(table.sort_key, reverse=not table.sort_reverse)

    def action_show_logs(self) -> None:
        self.query_one("#bottom", TabbedContent).active = "logs"
        self.query_one(LogPane).view.focus()

    def action_show_shells(self) -> None:
        self.query_one("#bottom", TabbedContent).active = "shells"
        views = self.query_one(ShellsPane).views
        if views:
            views[-1].terminal.focus()

    def action_zoom(self) -> None:
        """Give the logs and shells the whole screen (again: back to the dashboard)."""
        self.toggle_class("-zoomed")

    def action_reconnect(self) -> None:
        if self.connected:
            self.refresh_inventory()
        else:
            self._header("connecting to the engine…")
            self.connect_engine()

    # -- actions on sandboxes

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in MUTATING and self.grove.read_only:
            return None  # shown greyed out in the footer
        return True

    def _need_selection(self) -> SandboxInfo | None:
        sandbox = self.selected
        if sandbox is None:
            self.notify("Select a sandbox in the tree or the table first.", severity="warning")
        return sandbox

    def action_create(self) -> None:
        names = [e.name for e in self.environments]
        default = next(
            (e.name for e in self.environments if e.template_ready),
            names[0] if names else "debian:12",
        )

        def chosen(environment: str | None) -> None:
            if environment:
                self.engine_action(
                    f"create a sandbox from {environment}",
                    lambda: self.grove.gateway.create_sandbox(environment),
                    lambda s: f"Created {s.label} from {environment}",
                )

        self.app.push_screen(
            AskScreen("Create sandbox", "Environment:", default, suggestions=names), chosen
        )

    def action_terminate(self) -> None:
        sandbox = self._need_selection()
        if sandbox is None:
            return
        sid, label = sandbox.id, sandbox.label

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.engine_action(
                    f"terminate {label}",
                    lambda: self.grove.gateway.terminate_sandbox(sid),
                    lambda _s: f"Terminated {label}",
                )

        self.app.push_screen(
            ConfirmScreen(
                f"Terminate {label}?",
                f"Sandbox {sid} ({sandbox.environment}, {sandbox.phase}) will be destroyed with "
                "its memory and disk. Forks of it keep running. This cannot be undone.",
                "Terminate",
            ),
            confirmed,
        )

    def action_stop(self) -> None:
        if (sandbox := self._need_selection()) is not None:
            sid, label = sandbox.id, sandbox.label
            self.engine_action(
                f"stop {label}",
                lambda: self.grove.gateway.stop_sandbox(sid),
                lambda _s: f"Stopped {label}",
            )

    def action_start(self) -> None:
        if (sandbox := self._need_selection()) is not None:
            sid, label = sandbox.id, sandbox.label
            self.engine_action(
                f"start {label}",
                lambda: self.grove.gateway.start_sandbox(sid),
                lambda _s: f"Started {label}",
            )

    def action_fork(self) -> None:
        sandbox = self._need_selection()
        if sandbox is None:
            return
        sid, label = sandbox.id, sandbox.label

        def chosen(answer: str | None) -> None:
            if answer:
                count = int(answer)
                self.engine_action(
                    f"fork {label}",
                    lambda: self.grove.gateway.fork(sid, count),
                    lambda kids: f"Forked {label} into {len(kids)}",
                )

        self.app.push_screen(
            AskScreen(
                f"Fork {label}", "How many forks?", "1", validators=[Integer(minimum=1, maximum=32)]
            ),
            chosen,
        )

    def action_snapshot(self) -> None:
        sandbox = self._need_selection()
        if sandbox is None:
            return
        sid, label = sandbox.id, sandbox.label

        def named(name: str | None) -> None:
            if name:
                self.engine_action(
                    f"snapshot {label}",
                    lambda: self.grove.gateway.snapshot(sid, name),
                    lambda node: f"Snapshot {node.label} taken",
                )

        self.app.push_screen(
            AskScreen(f"Snapshot {label}", "Snapshot name:", f"{label}-snap"), named
        )

    def action_reset(self) -> None:
        sandbox = self._need_selection()
        if sandbox is None:
            return
        sid, label = sandbox.id, sandbox.label
        snapshots = [n.label for n in self.lineage if n.kind == "snapshot"]

        def chosen(snapshot: str | None) -> None:
            if snapshot is None:
                return
            target = snapshot or "how it was created"
            self.engine_action(
                f"reset {label}",
                lambda: self.grove.gateway.reset_sandbox(sid, snapshot),
                lambda _s: f"Reset {label} to {target}",
            )

        hint = f" Named snapshots: {', '.join(snapshots)}." if snapshots else ""
        self.app.push_screen(
            AskScreen(
                f"Reset {label}",
                f"Back to which snapshot? Leave it empty for how {label} was created. "
                f"What changed since is lost.{hint}",
                "",
                suggestions=snapshots,
                allow_empty=True,
            ),
            chosen,
        )

    # -- shells

    def action_open_shell(self) -> None:
        if (sandbox := self._need_selection()) is not None:
            self._shell_flow(sandbox.id, sandbox.label)

    @work(group="shell-open", exclusive=True, exit_on_error=False)
    async def _shell_flow(self, sandbox_id: str, label: str) -> None:
        """A new shell, or (when the sandbox has running shells) a choice to attach to one."""
        gateway = self.grove.gateway
        try:
            shells = [s for s in await gateway.list_shells(sandbox_id) if s.running]
        except GroveError as exc:
            if exc.code != NOT_SUPPORTED:
                self.post_message(ActionFailed(f"list the shells of {label}", exc))
                return
            shells = []
        choice = NEW_SHELL
        if shells:
            now = self.grove.now()
            pane = self.query_one(ShellsPane)
            options = [(NEW_SHELL, "New shell")]
            for shell in shells:
                here = " · open in a tab" if pane.find(sandbox_id, shell.shell_id) else ""
                command = " ".join(shell.argv) or "shell"
                options.append(
                    (
                        shell.shell_id,
                        f"Attach to {shell.shell_id} · {command} · up "
                        f"{fmt.age(shell.created_at, now)} · {shell.viewers} viewer"
                        f"{'s' if shell.viewers != 1 else ''}{here}",
                    )
                )
            picked = await self.app.push_screen_wait(
                ChooseScreen(
                    f"Shell in {label}",
                    "Open a new shell, or attach to one that is still running "
                    "(its scrollback comes back):",
                    options,
                )
            )
            if picked is None:
                return
            choice = picked
        await self.open_shell_tab(sandbox_id, label, "" if choice == NEW_SHELL else choice)

    async def open_shell_tab(
        self, sandbox_id: str, label: str, shell_id: str = ""
    ) -> ShellView | None:
        """Open (or attach to) a shell in a tab; None and a notification if the engine says no."""
        pane = self.query_one(ShellsPane)
        bottom = self.query_one("#bottom", TabbedContent)
        existing = pane.find(sandbox_id, shell_id)
        if existing is not None:
            bottom.active = "shells"
            pane.activate(existing)
            return existing
        size = pane.size
        try:
            session = await self.grove.gateway.open_shell(
                sandbox_id, max(20, size.width - 1), max(5, size.height - 2), shell_id
            )
        except GroveError as exc:
            self.post_message(ActionFailed(f"open a shell in {label}", exc))
            return None
        bottom.active = "shells"
        title = f"{label} · {session.shell_id}" if session.shell_id else label
        return await pane.open(session, title, sandbox_id)

    async def action_close_tab(self) -> None:
        bottom = self.query_one("#bottom", TabbedContent)
        active = bottom.active_pane
        if bottom.active == "shells":
            view = await self.query_one(ShellsPane).close_active()
            if view is not None and view.shell_id and not view.closed:
                self.notify(
                    f"Closed the tab; {view.shell_id} keeps running in its sandbox "
                    "(o attaches to it again)."
                )
        elif active is not None and active.id and active.query(ServiceLogPane):
            await bottom.remove_pane(active.id)
            bottom.active = "logs"

    # -- services

    def action_start_service(self) -> None:
        sandbox = self._need_selection()
        if sandbox is None:
            return
        sid, label = sandbox.id, sandbox.label

        def submitted(answer: tuple[str, str, str] | None) -> None:
            if answer is None:
                return
            name, command, probe_text = answer
            try:
                argv, probe = parse_command(command), parse_probe(probe_text)
            except GroveError as exc:
                self._report(exc, f"start {name}")
                return
            self.engine_action(
                f"start service {name} in {label}" + (" (waiting until ready)" if probe else ""),
                lambda: self.grove.gateway.start_service(sid, name, argv, probe),
                lambda info: (
                    f"Service {info.name} in {label} is {info.state}"
                    + (", ready" if info.ready else "")
                ),
                then=lambda: self.open_service_log(sid, label, name),
            )

        self.app.push_screen(ServiceScreen(f"Start a service in {label}"), submitted)

    def action_stop_service(self) -> None:
        if (sandbox := self._need_selection()) is not None:
            self._service_flow(sandbox.id, sandbox.label, "stop")

    def action_service_logs(self) -> None:
        if (sandbox := self._need_selection()) is not None:
            self._service_flow(sandbox.id, sandbox.label, "logs")

    @work(group="service-pick", exclusive=True, exit_on_error=False)
    async def _service_flow(self, sandbox_id: str, label: str, what: str) -> None:
        try:
            services = await self.grove.gateway.list_services(sandbox_id)
        except GroveError as exc:
            self.post_message(ActionFailed(f"list the services of {label}", exc))
            return
        if what == "stop":
            services = [s for s in services if s.active]
        if not services:
            hint = "v starts one" if what == "logs" else "nothing to stop"
            self.notify(
                f"{label} has no {'running ' if what == 'stop' else ''}services ({hint}).",
                severity="warning",
            )
            return
        name: str | None = services[0].name
        if len(services) > 1:
            options = [
                (
                    s.name,
                    f"{s.name} · {s.state}{' · ready' if s.ready else ''} · {' '.join(s.argv)}",
                )
                for s in services
            ]
            verb = "Stop" if what == "stop" else "Follow the log of"
            name = await self.app.push_screen_wait(
                ChooseScreen(f"Services in {label}", f"{verb} which service?", options)
            )
        if name is None:
            return
        if what == "logs":
            self.open_service_log(sandbox_id, label, name)
            return
        chosen = name
        self.engine_action(
            f"stop service {chosen} in {label}",
            lambda: self.grove.gateway.stop_service(sandbox_id, chosen),
            lambda info: f"Service {info.name} in {label} is {info.state}",
        )

    def open_service_log(self, sandbox_id: str, label: str, service: str) -> None:
        """A tab following the service's log (switched to if it is already open)."""
        bottom = self.query_one("#bottom", TabbedContent)
        for pane in self.query(ServiceLogPane):
            if pane.sandbox_id == sandbox_id and pane.service == service:
                tab = pane.parent
                if isinstance(tab, TabPane) and tab.id:
                    bottom.active = tab.id
                return
        tab_id = f"svc-{next(self._log_tabs)}"
        log = ServiceLogPane(self.grove.gateway, sandbox_id, label, service)

        async def add() -> None:
            await bottom.add_pane(TabPane(f"{service} @ {label}", log, id=tab_id), before="shells")
            bottom.active = tab_id

        self.call_later(add)

    def engine_action(
        self,
        what: str,
        call: Callable[[], Awaitable[Any]],
        done: Callable[[Any], str],
        then: Callable[[], object] | None = None,
    ) -> None:
        self._action_worker(what, call, done, then)

    @work(group="actions", exit_on_error=False)
    async def _action_worker(
        self,
        what: str,
        call: Callable[[], Awaitable[Any]],
        done: Callable[[Any], str],
        then: Callable[[], object] | None = None,
    ) -> None:
        self.post_message(Activity(f"{what[0].upper()}{what[1:]}…"))
        try:
            result = await call()
        except GroveError as exc:
            self.post_message(ActionFailed(what, exc))
            return
        finally:
            self.post_message(Activity(None))
        self.post_message(ActionDone(done(result), then))

    @on(ActionDone)
    def _action_done(self, message: ActionDone) -> None:
        self.notify(message.text)
        if message.then is not None:
            message.then()
        self.refresh_inventory()

    @on(ActionFailed)
    def _action_failed(self, message: ActionFailed) -> None:
        self._report(message.error, message.action)
        self.refresh_inventory()

    @on(Activity)
    def _activity(self, message: Activity) -> None:
        self.query_one(ActivityLine).show(message.text, message.fraction)

    def _report(self, error: GroveError, what: str) -> None:
        """A notification with the remedy; repeats of the same failure are not re-announced."""
        key = (error.code, error.message)
        if key == self._last_error:
            return
        self._last_error = key
        if error.code == NOT_SUPPORTED:
            self.notify(f"{error.message}.", title="Not available yet", severity="warning")
            self._last_error = None
            return
        body = error.message + (f"\n→ {error.remedy}" if error.remedy else "")
        self.notify(
            body,
            title=f"Could not {what}" if what != "engine" else "Engine",
            severity="error",
            timeout=8,
        )

    # -- demo

    @work(group="demo", exit_on_error=False)
    async def run_demo(self) -> None:
        from tui.demo import Demo

        await Demo(self).run()

    def run_action_by_name(self, action: str) -> None:
        """For the command palette: the same path as the key binding, checks included."""
        if self.check_action(action, ()) is not True:
            self.notify("Read-only mode: this action is disabled.", severity="warning")
            return
        self.call_later(getattr(self, f"action_{action}"))  # some actions are async
