"""The dashboard screen: lineage tree, metering table, host bar, sparklines, logs and shells.

All engine work runs in workers; results come back as messages (tui.messages) and the
handlers only touch widgets. A refresh replaces data, never the selection or the focus.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
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
from tui.engine.gateway import NOT_SUPPORTED, derive_lineage
from tui.messages import (
    ActionDone,
    ActionFailed,
    Activity,
    EngineConnected,
    EngineLost,
    EngineStatus,
    EventsReceived,
    InventoryLoaded,
    MeteringUnavailable,
    MeteringUpdated,
)
from tui.metering import MeterHistory
from tui.models import EngineInfo, EnvironmentInfo, EventInfo, LineageNode, SandboxInfo
from tui.palette import Palette
from tui.screens.dialogs import AskScreen, ConfirmScreen
from tui.widgets.bars import ActivityLine, EngineHeader, HostBar
from tui.widgets.lineage_tree import LineageTree, visible_nodes
from tui.widgets.log_view import LogPane
from tui.widgets.metering_table import MeteringTable, MeterRow
from tui.widgets.shells import ShellsPane
from tui.widgets.usage import UsagePanel

if TYPE_CHECKING:
    from tui.app import GroveApp

#: Actions that change sandboxes: disabled in read-only mode.
MUTATING = frozenset({"create", "terminate", "stop", "start", "fork", "snapshot", "open_shell"})
EVENT_FLUSH = 0.05


def format_event(event: EventInfo, label: str) -> str:
    stamp = time.strftime("%m-%d %H:%M:%S", time.localtime(event.ts))
    detail = " ".join(
        f"{k}={json.dumps(v) if isinstance(v, list | dict) else v}"
        for k, v in event.detail.items()
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
            parent = sandbox.parent_id if sandbox.parent_id in seen else environments.get(
                sandbox.environment, "")
            attached.append(LineageNode(sandbox.id, "sandbox", sandbox.label, parent,
                                        sandbox.phase, sandbox))
    return attached


def _event_key(event: EventInfo) -> tuple[float, int]:
    return (event.ts, event.seq)


class MainScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "create", "Create", tooltip="Create a sandbox from an environment"),
        Binding("d", "terminate", "Terminate", tooltip="Destroy the selected sandbox"),
        Binding("x", "stop", "Stop"),
        Binding("u", "start", "Start"),
        Binding("o", "open_shell", "Shell"),
        Binding("F", "fork", "Fork"),
        Binding("P", "snapshot", "Snapshot", show=False),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("s", "sort", "Sort", show=False),
        Binding("S", "reverse_sort", "Reverse sort", show=False),
        Binding("r", "reconnect", "Refresh", show=False),
        Binding("l", "show_logs", "Logs", show=False),
        Binding("h", "show_shells", "Shells", show=False),
        Binding("z", "zoom", "Zoom logs/shells", show=False),
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
        self._refresh_timer: Timer | None = None
        self._metering: Worker[None] | None = None
        self._followers: dict[str, Worker[None]] = {}
        self._event_buffer: list[EventInfo] = []
        self._event_log: list[EventInfo] = []
        self._event_seq: dict[str, int] = {}
        self._flush_timer: Timer | None = None
        self._last_error: tuple[str, str] | None = None
        self._demo_done = False

    @property
    def grove(self) -> GroveApp:
        from tui.app import GroveApp

        assert isinstance(self.app, GroveApp)
        return self.app

    # -- layout

    def compose(self) -> ComposeResult:
        yield EngineHeader(id="header")
        yield ActivityLine(id="activity")
        yield Input(placeholder="filter sandboxes by name, id, phase or environment (esc clears)",
                    id="filter")
        with Horizontal(id="body"):
            yield LineageTree(id="lineage")
            with Vertical(id="main"):
                yield MeteringTable(now=self.grove.now, id="metering")
                yield HostBar(id="host")
                yield UsagePanel(id="usage")
        with TabbedContent(id="bottom", initial="logs"):
            with TabPane("Logs", id="logs"):
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
            self._refresh_timer = self.set_interval(self.grove.refresh_interval,
                                                    self.refresh_inventory)
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
        self._follow_events()
        self._show()

    def _show(self) -> None:
        nodes = visible_nodes(self.lineage, self.filter_text)
        shown = [n.sandbox for n in nodes if n.sandbox is not None]
        needle = self.filter_text.lower().strip()
        if needle:
            # The table lists the matches themselves, not the ancestors kept for context.
            shown = [s for s in shown if any(needle in f.lower() for f in
                                             (s.label, s.id, s.phase, s.environment))]
        self.lineage_tree.show(self.lineage, self.filter_text)
        self.metering_table.show(
            [MeterRow(s, self.meters.latest.get(s.id), i) for i, s in enumerate(shown)]
        )
        running = sum(1 for s in self.sandboxes.values() if s.phase == "running")
        self.query_one(HostBar).show(self.meters.host, len(self.sandboxes), running,
                                     self.metering_note)
        if self.selected_id is None or self.selected_id not in self.sandboxes:
            self.selected_id = self.metering_table.selected_sandbox
            self.lineage_tree.select_sandbox(self.selected_id)
        self._show_usage()

    def _show_usage(self) -> None:
        sandbox = self.sandboxes.get(self.selected_id or "")
        panel = self.query_one(UsagePanel)
        if sandbox is None:
            panel.show(None, [], [])
            return
        panel.show(sandbox.label, self.meters.memory(sandbox.id), self.meters.cpu(sandbox.id))

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
            self._report(GroveError("internal", f"{type(error).__name__}: {error}",
                                    "please report this with the steps that led to it"),
                         "finish a background task")

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

    @on(Tree.NodeHighlighted, "#lineage")
    def _tree_highlighted(self, event: Tree.NodeHighlighted[LineageNode]) -> None:
        node = event.node.data
        if node is not None and node.kind == "sandbox":
            self._select(node.id, source="tree")

    @on(DataTable.RowHighlighted, "#metering")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value:
            self._select(event.row_key.value, source="table")

    def _select(self, sandbox_id: str, source: str) -> None:
        if sandbox_id == self.selected_id:
            return
        self.selected_id = sandbox_id
        if source != "tree":
            self.lineage_tree.select_sandbox(sandbox_id)
        if source != "table":
            self.metering_table.select_sandbox(sandbox_id)
        self._show_usage()

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
        default = next((e.name for e in self.environments if e.template_ready),
                       names[0] if names else "debian:12")

        def chosen(environment: str | None) -> None:
            if environment:
                self.engine_action(f"create a sandbox from {environment}",
                                   lambda: self.grove.gateway.create_sandbox(environment),
                                   lambda s: f"Created {s.label} from {environment}")

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
                self.engine_action(f"terminate {label}",
                                   lambda: self.grove.gateway.terminate_sandbox(sid),
                                   lambda _s: f"Terminated {label}")

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
            self.engine_action(f"stop {label}", lambda: self.grove.gateway.stop_sandbox(sid),
                               lambda _s: f"Stopped {label}")

    def action_start(self) -> None:
        if (sandbox := self._need_selection()) is not None:
            sid, label = sandbox.id, sandbox.label
            self.engine_action(f"start {label}", lambda: self.grove.gateway.start_sandbox(sid),
                               lambda _s: f"Started {label}")

    def action_fork(self) -> None:
        sandbox = self._need_selection()
        if sandbox is None:
            return
        sid, label = sandbox.id, sandbox.label

        def chosen(answer: str | None) -> None:
            if answer:
                count = int(answer)
                self.engine_action(f"fork {label}", lambda: self.grove.gateway.fork(sid, count),
                                   lambda kids: f"Forked {label} into {len(kids)}")

        self.app.push_screen(
            AskScreen(f"Fork {label}", "How many forks?", "1",
                      validators=[Integer(minimum=1, maximum=32)]),
            chosen,
        )

    def action_snapshot(self) -> None:
        sandbox = self._need_selection()
        if sandbox is None:
            return
        sid, label = sandbox.id, sandbox.label

        def named(name: str | None) -> None:
            if name:
                self.engine_action(f"snapshot {label}",
                                   lambda: self.grove.gateway.snapshot(sid, name),
                                   lambda node: f"Snapshot {node.label} taken")

        self.app.push_screen(AskScreen(f"Snapshot {label}", "Snapshot name:", f"{label}-snap"),
                             named)

    def action_open_shell(self) -> None:
        if (sandbox := self._need_selection()) is not None:
            self._open_shell(sandbox.id, sandbox.label)

    @work(group="actions", exit_on_error=False)
    async def _open_shell(self, sandbox_id: str, label: str) -> None:
        pane = self.query_one(ShellsPane)
        size = pane.size
        try:
            session = await self.grove.gateway.open_shell(
                sandbox_id, max(20, size.width - 1), max(5, size.height - 2)
            )
        except GroveError as exc:
            self.post_message(ActionFailed(f"open a shell in {label}", exc))
            return
        self.query_one("#bottom", TabbedContent).active = "shells"
        await pane.open(session, label)

    def engine_action(
        self,
        what: str,
        call: Callable[[], Awaitable[Any]],
        done: Callable[[Any], str],
    ) -> None:
        self._action_worker(what, call, done)

    @work(group="actions", exit_on_error=False)
    async def _action_worker(
        self, what: str, call: Callable[[], Awaitable[Any]], done: Callable[[Any], str]
    ) -> None:
        self.post_message(Activity(f"{what[0].upper()}{what[1:]}…"))
        try:
            result = await call()
        except GroveError as exc:
            self.post_message(ActionFailed(what, exc))
            return
        finally:
            self.post_message(Activity(None))
        self.post_message(ActionDone(done(result)))

    @on(ActionDone)
    def _action_done(self, message: ActionDone) -> None:
        self.notify(message.text)
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
        self.notify(body, title=f"Could not {what}" if what != "engine" else "Engine",
                    severity="error", timeout=8)

    # -- demo

    @work(group="demo", exit_on_error=False)
    async def run_demo(self) -> None:
        gateway = self.grove.gateway
        environment = "debian:12"
        try:
            async for update in gateway.pull_environment(environment, warm=True):
                self.post_message(Activity(f"Demo: pulling {environment}: {update.stage}",
                                           update.fraction))
            for i in (1, 2):
                self.post_message(Activity(f"Demo: creating sandbox {i} of 2 from {environment}…"))
                sandbox = await gateway.create_sandbox(environment)
                self.post_message(ActionDone(f"Demo: {sandbox.label} is {sandbox.phase}"))
        except GroveError as exc:
            self.post_message(ActionFailed("run the demo", exc))
        finally:
            self.post_message(Activity(None))

    def run_action_by_name(self, action: str) -> None:
        """For the command palette: the same path as the key binding, checks included."""
        if self.check_action(action, ()) is not True:
            self.notify("Read-only mode: this action is disabled.", severity="warning")
            return
        getattr(self, f"action_{action}")()
