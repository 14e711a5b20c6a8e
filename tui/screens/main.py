"""The dashboard screen: the layout, and the glue between widgets, state and controller.

It holds neither state nor workers. DashboardState (the app's) is what is known; the
FleetController owns the workers and changes the state; each change reaches the widgets as
a revision reactive they are bound to (`data_bind`), and each widget draws its own part.
"""

from __future__ import annotations

import time
from itertools import count
from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Input, TabbedContent, TabPane, Tree

from engine.errors import GroveError
from tui.actions import BY_ID, MUTATING, bindings
from tui.controller.fleet import FleetController
from tui.controller.flows import Flows
from tui.messages import ActionDone, ActionFailed, Activity, StateChanged
from tui.models import LineageNode
from tui.palette import Palette
from tui.state import DashboardState, SandboxKey, join, split
from tui.state.dashboard import Revision
from tui.widgets.bars import ActivityLine, EngineHeader, HostBar, TransferLine
from tui.widgets.event_log import EventLogPane
from tui.widgets.lineage_tree import LineageTree
from tui.widgets.metering_table import MeteringTable
from tui.widgets.service_logs import ServiceLogPane
from tui.widgets.shells import ShellsPane, ShellView
from tui.widgets.usage import UsagePanel

if TYPE_CHECKING:
    from tui.app import GroveApp

#: Which revision reactive moves for each part of the state.
REVISIONS = (
    (Revision.HOSTS, "hosts_rev"),
    (Revision.TREE, "tree_rev"),
    (Revision.METERS, "meters_rev"),
    (Revision.SELECTION, "selection_rev"),
    (Revision.VIEW, "view_rev"),
    (Revision.EVENTS, "events_rev"),
    (Revision.SERVICES, "services_rev"),
    (Revision.TRANSFER, "transfer_rev"),
)


class MainScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = list(bindings())

    hosts_rev: reactive[int] = reactive(0)
    tree_rev: reactive[int] = reactive(0)
    meters_rev: reactive[int] = reactive(0)
    selection_rev: reactive[int] = reactive(0)
    view_rev: reactive[int] = reactive(0)
    events_rev: reactive[int] = reactive(0)
    services_rev: reactive[int] = reactive(0)
    transfer_rev: reactive[int] = reactive(0)

    def __init__(self) -> None:
        super().__init__()
        self._log_tabs = count(1)
        self._pending = Revision.NONE
        self._painted_at = 0.0
        self._pace_timer: Timer | None = None

    @property
    def grove(self) -> GroveApp:
        from tui.app import GroveApp

        assert isinstance(self.app, GroveApp)
        return self.app

    @property
    def state(self) -> DashboardState:
        return self.grove.state

    # -- layout

    def compose(self) -> ComposeResult:
        state, cls = self.state, MainScreen
        self.controller = FleetController(
            state,
            self.grove.gateways,
            meter_interval=self.grove.meter_interval,
            stall_s=self.grove.stall_s,
            demo=self.grove.demo,
        )
        self.flows = Flows(self, self.controller)
        yield self.controller
        yield EngineHeader(state, self.grove.read_only, id="header").data_bind(cls.hosts_rev)
        yield ActivityLine(id="activity")
        yield TransferLine(state, id="transfer").data_bind(cls.transfer_rev)
        yield Input(
            placeholder="filter sandboxes by name, id, phase, environment or host (esc clears)",
            id="filter",
        )
        with Horizontal(id="body"):
            yield LineageTree(state, id="lineage").data_bind(
                cls.tree_rev, cls.meters_rev, cls.selection_rev
            )
            with Vertical(id="main"):
                yield MeteringTable(state, now=self.grove.now, id="metering").data_bind(
                    cls.meters_rev, cls.tree_rev, cls.view_rev, cls.selection_rev
                )
                yield HostBar(state, id="host").data_bind(cls.meters_rev, cls.hosts_rev)
                yield UsagePanel(state, id="usage").data_bind(
                    cls.meters_rev, cls.selection_rev, cls.services_rev, cls.tree_rev
                )
        with TabbedContent(id="bottom", initial="logs"):
            with TabPane("Events", id="logs"):
                yield EventLogPane(state, id="events").data_bind(cls.events_rev)
            with TabPane("Shells", id="shells"):
                yield ShellsPane(id="shell-pane")
        yield Footer()

    @property
    def lineage_tree(self) -> LineageTree:
        return self.query_one(LineageTree)

    @property
    def metering_table(self) -> MeteringTable:
        return self.query_one(MeteringTable)

    @property
    def shells(self) -> ShellsPane:
        return self.query_one(ShellsPane)

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.query_one(ActivityLine).show(None)
        self.lineage_tree.border_title = "lineage"
        self.metering_table.border_title = "metering"
        self.query_one("#usage").border_title = "selected sandbox"
        self.restyle()
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.restyle())
        self.metering_table.focus()
        self.controller.start()

    def restyle(self) -> None:
        """Rich-text colours follow the theme; CSS handles the rest."""
        palette = Palette(self.app.theme_variables or self.app.get_css_variables())
        self.lineage_tree.restyle(palette)
        self.metering_table.restyle(palette)

    # -- state changes reach the widgets as revisions

    @on(StateChanged)
    def _state_changed(self) -> None:
        self._pending |= self.state.take_changes()
        # Metering alone is drawn at most once per interval: a fleet's hosts sample at 1 Hz
        # each, out of step, and one frame a second shows them all. Anything else: now.
        since = time.monotonic() - self._painted_at
        if self._pending == Revision.METERS and since < self.grove.meter_interval:
            if self._pace_timer is None:
                self._pace_timer = self.set_timer(self.grove.meter_interval - since, self._paint)
            return
        self._paint()

    @property
    def settled(self) -> bool:
        """Every state change so far is on screen (nothing waits for the next paint)."""
        return self._pace_timer is None and self._pending is Revision.NONE

    def _paint(self) -> None:
        if self._pace_timer is not None:
            self._pace_timer.stop()
            self._pace_timer = None
        changed, self._pending = self._pending, Revision.NONE
        self._painted_at = time.monotonic()
        for flag, name in REVISIONS:
            if changed & flag:
                setattr(self, name, getattr(self, name) + 1)

    # -- selection: tree and table both set the state's; both follow it

    # Highlight events arrive after the fact: one that no longer matches its widget's cursor
    # is an echo of an earlier move (a rebuild, or following the other widget).

    @on(Tree.NodeHighlighted, "#lineage")
    def _tree_highlighted(self, event: Tree.NodeHighlighted[LineageNode]) -> None:
        node = event.node.data
        # Only a move the user makes in the tree selects: the tree's own rebuilds and its
        # following of the table highlight too, and would race the selection made elsewhere.
        if event.node is not self.lineage_tree.cursor_node or not self.lineage_tree.has_focus:
            return
        if node is not None and node.kind == "sandbox":
            self.controller.select(node.id)

    @on(DataTable.RowHighlighted, "#metering")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value
        table = self.metering_table
        if key and key == table.selected_sandbox and not table.rebuilding:
            self.controller.select(key)

    def select(self, host: str, sandbox_id: str) -> None:
        """Select a sandbox from code (the demo), now or once the watch lists it."""
        self.controller.select_when_listed(join(host, sandbox_id))

    @on(MeteringTable.SortRequested)
    def _sort_requested(self, message: MeteringTable.SortRequested) -> None:
        self.state.sort_by(message.key)
        self.controller.keep_selection_visible()

    # -- actions: every key and palette entry goes through the action table

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "run" and parameters and parameters[0] in MUTATING and self.grove.read_only:
            return None  # shown greyed out in the footer
        return True

    async def action_run(self, action_id: str) -> None:
        if action_id not in BY_ID:
            return
        result = self.flows.run(action_id)
        if hasattr(result, "__await__"):
            await result  # type: ignore[misc]

    def run_action_by_name(self, action: str) -> None:
        """For the command palette: the same path as the key binding, checks included."""
        if self.check_action("run", (action,)) is not True:
            self.notify("Read-only mode: this action is disabled.", severity="warning")
            return
        self.call_later(self.action_run, action)

    @on(ActionDone)
    def _action_done(self, message: ActionDone) -> None:
        self.notify(message.text)
        if message.then is not None:
            message.then()

    @on(ActionFailed)
    def _action_failed(self, message: ActionFailed) -> None:
        self.controller.report(message.error, message.action)

    @on(Activity)
    def _activity(self, message: Activity) -> None:
        self.query_one(ActivityLine).show(message.text, message.fraction)

    # -- view operations the flows ask for

    def open_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.state.set_filter(event.value)
        self.controller.keep_selection_visible()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        self.metering_table.focus()

    def close_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if box.display:
            box.value = ""
            box.display = False
            self.state.set_filter("")
            self.controller.keep_selection_visible()
            self.metering_table.focus()

    def show_tab(self, tab: str) -> None:
        self.query_one("#bottom", TabbedContent).active = tab
        if tab == "logs":
            self.query_one(EventLogPane).view.focus()
        elif views := self.shells.views:
            views[-1].terminal.focus()

    def toggle_zoom(self) -> None:
        """Give the logs and shells the whole screen (again: back to the dashboard)."""
        self.toggle_class("-zoomed")

    async def open_shell_tab(
        self, key: SandboxKey, label: str, shell_id: str = ""
    ) -> ShellView | None:
        """Open (or attach to) a shell in a tab; None and a notification if the engine says no."""
        pane = self.shells
        bottom = self.query_one("#bottom", TabbedContent)
        existing = pane.find(key, shell_id)
        if existing is not None:
            bottom.active = "shells"
            pane.activate(existing)
            return existing
        host, sandbox_id = split(key)
        size = pane.size
        try:
            session = await self.controller.gateway(host).open_shell(
                sandbox_id, max(20, size.width - 1), max(5, size.height - 2), shell_id
            )
        except GroveError as exc:
            self.post_message(ActionFailed(f"open a shell in {label}", exc))
            return None
        bottom.active = "shells"
        where = f"{host}: " if len(self.state.hosts) > 1 else ""
        title = f"{where}{label} · {session.shell_id}" if session.shell_id else where + label
        return await pane.open(session, title, key)

    async def close_tab(self) -> ShellView | None:
        """Close the shell or service-log tab in front; the closed shell view, if it was one."""
        bottom = self.query_one("#bottom", TabbedContent)
        active = bottom.active_pane
        if bottom.active == "shells":
            return await self.shells.close_active()
        if active is not None and active.id and active.query(ServiceLogPane):
            await bottom.remove_pane(active.id)
            bottom.active = "logs"
        return None

    def open_service_log(self, key: SandboxKey, label: str, service: str) -> None:
        """A tab following the service's log (switched to if it is already open)."""
        bottom = self.query_one("#bottom", TabbedContent)
        host, sandbox_id = split(key)
        for pane in self.query(ServiceLogPane):
            if pane.sandbox_id == sandbox_id and pane.service == service and pane.host == host:
                tab = pane.parent
                if isinstance(tab, TabPane) and tab.id:
                    bottom.active = tab.id
                return
        tab_id = f"svc-{next(self._log_tabs)}"
        log = ServiceLogPane(self.controller.gateway(host), sandbox_id, label, service, host=host)

        async def add() -> None:
            await bottom.add_pane(TabPane(f"{service} @ {label}", log, id=tab_id), before="shells")
            bottom.active = tab_id

        self.call_later(add)

    # -- demo

    def run_demo(self, host: str) -> None:
        from tui.demo import Demo

        self.controller.run_worker(Demo(self, host).run(), group="demo", exit_on_error=False)
