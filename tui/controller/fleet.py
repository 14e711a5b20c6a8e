"""The dashboard's controller: it owns every worker, and turns what the engines say into
DashboardState transitions. It draws nothing; the screen learns of changes through one
coalesced StateChanged message and hands them to the widgets' reactives.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from textual import on, work
from textual.widget import Widget
from textual.worker import Worker, WorkerState

from engine.errors import GroveError
from tui.controller.host_link import HostLink
from tui.engine.gateway import NOT_SUPPORTED, EngineGateway
from tui.messages import (
    ActionDone,
    ActionFailed,
    Activity,
    HistoryLoaded,
    HostConnected,
    HostConnecting,
    HostLost,
    InventoryChanged,
    MeteringUnavailable,
    MeterSampled,
    ServicesLoaded,
    StateChanged,
    TransferFailed,
    TransferFinished,
    TransferProgressed,
)
from tui.models import TransferProgress
from tui.state import DashboardState, SandboxKey, split
from tui.state.dashboard import Revision
from tui.state.transfer import Transfer

#: How long the status line keeps a finished transfer's outcome.
TRANSFER_SHOWN_S = 10.0

#: Event kinds after which the selected sandbox's service list is read again.
SERVICE_EVENTS = ("service", "started", "reset", "adopted", "stopped")


class FleetController(Widget):
    DEFAULT_CSS = "FleetController { display: none; }"

    def __init__(
        self,
        state: DashboardState,
        gateways: Mapping[str, EngineGateway],
        *,
        meter_interval: float = 1.0,
        stall_s: float | None = None,
        demo: bool = False,
    ) -> None:
        super().__init__()
        #: Play the tour on the first host once it answers (grove ui --demo).
        self.demo = demo
        self.demo_host: str | None = None
        self._want_selected: SandboxKey | None = None
        self.state = state
        self.gateways = dict(gateways)
        self.links = {
            name: HostLink(
                name, gw, self.post_message, meter_interval=meter_interval, stall_s=stall_s
            )
            for name, gw in self.gateways.items()
        }
        self._history_asked: set[SandboxKey] = set()
        self._no_history: set[str] = set()
        self._no_services: set[str] = set()
        self._told_unreachable: set[str] = set()
        self._last_error: tuple[str, str, str] | None = None
        # Known before the widgets are made: a fleet's table gets a host column.
        for name, gateway in self.gateways.items():
            state.add_host(name, gateway.description)

    def start(self) -> None:
        """Start every host's link: called by the screen once all its widgets are mounted,
        so nothing the engines say (or the demo does) arrives before there is a view."""
        for name, link in self.links.items():
            self.run_worker(
                link.run(), name=f"host {name}", group=f"host:{name}", exit_on_error=False
            )
        self._changed()

    def gateway(self, host: str) -> EngineGateway:
        return self.gateways[host]

    def _changed(self) -> None:
        if self.state.changed is not Revision.NONE:
            self.screen.post_message(StateChanged())

    def reconnect(self) -> None:
        for link in self.links.values():
            link.retry_now()

    # connection facts

    @on(HostConnecting)
    def _connecting(self, message: HostConnecting) -> None:
        if not self.state.hosts[message.host].connected:
            self.state.connecting(message.host)
            self._changed()

    @on(HostConnected)
    def _connected(self, message: HostConnected) -> None:
        self.state.connected(message.host, message.info, message.where)
        self._changed()
        if self.demo_host is None and self.demo and message.host == next(iter(self.gateways)):
            self.demo_host = message.host  # the tour runs once, on the first host
            self.screen.run_demo(message.host)  # type: ignore[attr-defined]

    @on(HostLost)
    def _lost(self, message: HostLost) -> None:
        was_connected = self.state.hosts[message.host].connected
        self.state.lost(message.host, message.error, reachable_before=message.reconnecting)
        if was_connected or message.host not in self._told_unreachable:
            # Never reached: said once with the remedy (the header only names the error);
            # its retries then stay quiet.
            self._told_unreachable.add(message.host)
            self.report(message.error, f"reach {message.host}")
        self._changed()

    # what the engines say

    @on(InventoryChanged)
    def _inventory(self, message: InventoryChanged) -> None:
        fresh = self.state.apply(message.host, message.change)
        selected = self.state.selected
        if selected is not None and split(selected)[0] == message.host:
            sandbox_id = split(selected)[1]
            if any(e.sandbox_id == sandbox_id and e.kind.startswith(SERVICE_EVENTS) for e in fresh):
                self.load_services(selected)
        if self._want_selected is not None and self.state.sandbox(self._want_selected):
            key, self._want_selected = self._want_selected, None
            self.select(key)
        if self.state.selected is None:
            self._select_first()
        self._changed()

    @on(MeterSampled)
    def _sampled(self, message: MeterSampled) -> None:
        self.state.sample(message.host, message.sample)
        self._changed()

    @on(MeteringUnavailable)
    def _metering_unavailable(self, message: MeteringUnavailable) -> None:
        note = (
            "metering: not available from this engine yet"
            if message.error.code == NOT_SUPPORTED
            else "metering: stream lost"
        )
        self.state.metering_unavailable(message.host, note)
        self._changed()

    @on(HistoryLoaded)
    def _history(self, message: HistoryLoaded) -> None:
        self.state.history(message.host, message.sandbox_id, message.samples)
        self._changed()

    @on(ServicesLoaded)
    def _services(self, message: ServicesLoaded) -> None:
        self.state.services_loaded(message.host, message.sandbox_id, message.services)
        self._changed()

    # selection: a new sandbox gets its sparklines' past and its services

    def select(self, key: SandboxKey | None) -> None:
        before = self.state.selected
        if self.state.select(key) and key is not None and key != before:
            host, _ = split(key)
            if key not in self._history_asked and host not in self._no_history:
                self._history_asked.add(key)
                self._load_history(key)
            self.load_services(key)
        self._changed()

    def select_when_listed(self, key: SandboxKey) -> None:
        """Select it now, or when the watch lists it (it may have been created a moment ago)."""
        if self.state.sandbox(key) is not None:
            self.select(key)
        else:
            self._want_selected = key

    def keep_selection_visible(self) -> None:
        """After the view changed (filter, sort, host focus): the selection stays if its row
        is still shown, else the first row shown is selected."""
        shown = [r.key for r in self.state.rows(0.0)]
        if shown and self.state.selected not in shown:
            self.select(shown[0])
        else:
            self._changed()

    def _select_first(self) -> None:
        rows = self.state.rows(0.0)
        if rows:
            self.select(rows[0].key)

    @work(group="history", exit_on_error=False)
    async def _load_history(self, key: SandboxKey) -> None:
        host, sandbox_id = split(key)
        try:
            samples = await self.gateways[host].metering_history(sandbox_id)
        except GroveError as exc:
            if exc.code == NOT_SUPPORTED:
                self._no_history.add(host)
            return  # a sparkline without a past is no reason to bother anyone
        self.post_message(HistoryLoaded(host, sandbox_id, samples))

    @work(group="services", exclusive=True, exit_on_error=False)
    async def load_services(self, key: SandboxKey) -> None:
        host, sandbox_id = split(key)
        if host in self._no_services or self.state.sandbox(key) is None:
            return
        try:
            services = await self.gateways[host].list_services(sandbox_id)
        except GroveError as exc:
            if exc.code == NOT_SUPPORTED:
                self._no_services.add(host)
            return
        self.post_message(ServicesLoaded(host, sandbox_id, services))

    def services_known(self, key: SandboxKey) -> bool:
        host, sandbox_id = split(key)
        state = self.state.hosts.get(host)
        return host in self._no_services or (state is not None and sandbox_id in state.services)

    # actions

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
        self.screen.post_message(Activity(f"{what[0].upper()}{what[1:]}…"))
        try:
            result = await call()
        except GroveError as exc:
            self.screen.post_message(ActionFailed(what, exc))
            return
        finally:
            self.screen.post_message(Activity(None))
        self.screen.post_message(ActionDone(done(result), then))

    # file transfers: one at a time, followed on the status line

    def transfer(self, key: SandboxKey, label: str, direction: str, local: str, guest: str) -> bool:
        """Push local into the sandbox at guest, or pull guest out to local; False (and
        said) while another transfer runs."""
        source, dest = (local, guest) if direction == "push" else (guest, local)
        if not self.state.transfer_started(direction, label, source, dest):
            self.app.notify(
                "A file transfer is under way; wait for it to finish.", severity="warning"
            )
            return False
        self._changed()
        self._transfer_worker(key, label, direction, local, guest)
        return True

    @work(group="transfer", exit_on_error=False)
    async def _transfer_worker(
        self, key: SandboxKey, label: str, direction: str, local: str, guest: str
    ) -> None:
        host, sandbox_id = split(key)
        gateway = self.gateways[host]
        path = str(Path(local).expanduser())

        def progress(update: TransferProgress) -> None:
            self.post_message(TransferProgressed(update))

        try:
            if direction == "push":
                result = await gateway.push_files(sandbox_id, path, guest, progress)
            else:
                result = await gateway.pull_files(sandbox_id, guest, path, progress)
        except GroveError as exc:
            what = f"push {local} to {label}" if direction == "push" else f"pull {guest}"
            self.post_message(TransferFailed(what, exc))
            return
        except Exception as exc:  # an OSError writing a pulled file, say: shown, not fatal
            self.post_message(TransferFailed("transfer files", _internal(exc)))
            return
        self.post_message(TransferFinished(result))

    @on(TransferProgressed)
    def _transfer_progressed(self, message: TransferProgressed) -> None:
        self.state.transfer_progress(message.progress)
        self._changed()

    @on(TransferFinished)
    def _transfer_finished(self, message: TransferFinished) -> None:
        self.state.transfer_done(message.result)
        self._changed()
        self._clear_transfer_later()

    @on(TransferFailed)
    def _transfer_failed(self, message: TransferFailed) -> None:
        self.state.transfer_failed(message.error.message)
        self._changed()
        self.report(message.error, message.action)
        self._clear_transfer_later()

    def _clear_transfer_later(self) -> None:
        transfer = self.state.transfer
        if transfer is not None:
            self.set_timer(TRANSFER_SHOWN_S, lambda: self._clear_transfer(transfer))

    def _clear_transfer(self, transfer: Transfer) -> None:
        self.state.transfer_cleared(transfer)
        self._changed()

    def report(self, error: GroveError, what: str) -> None:
        """A notification with the remedy; the same failure is not announced twice running."""
        key = (what, error.code, error.message)
        if key == self._last_error:
            return
        self._last_error = key
        if error.code == NOT_SUPPORTED:
            self.app.notify(f"{error.message}.", title="Not available yet", severity="warning")
            self._last_error = None
            return
        body = error.message + (f"\n→ {error.remedy}" if error.remedy else "")
        self.app.notify(body, title=f"Could not {what}", severity="error", timeout=8)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # GroveErrors are handled where they happen; anything else is a bug, shown not fatal.
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            error = event.worker.error
            self.report(
                GroveError(
                    "internal",
                    f"{type(error).__name__}: {error}",
                    "please report this with the steps that led to it",
                ),
                "finish a background task",
            )


def _internal(error: Exception) -> GroveError:
    """A failure that is no GroveError (an OSError writing a pulled file, say): shown whole."""
    if isinstance(error, OSError):
        return GroveError("local_error", str(error), "check the local path and its permissions")
    return GroveError(
        "internal",
        f"{type(error).__name__}: {error}",
        "please report this with the steps that led to it",
    )
