"""What each action of the table does: ask what is needed (a dialog), then have the controller
run it against the host that owns the selection. Dialog bounds come from that host's engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.validation import Integer

from engine.errors import GroveError
from engine.net import policy as net_policy
from tui import format as fmt
from tui.actions import BY_ID, Action
from tui.engine.gateway import NOT_SUPPORTED, EngineGateway, parse_command, parse_probe
from tui.messages import ActionFailed
from tui.models import Limits, SandboxInfo
from tui.screens.dialogs import (
    AskScreen,
    Checked,
    ChooseScreen,
    ConfirmScreen,
    CreateRequest,
    CreateScreen,
    FilesRequest,
    FilesScreen,
    ServiceScreen,
)
from tui.state import SandboxKey, split

if TYPE_CHECKING:
    from tui.controller.fleet import FleetController
    from tui.screens.main import MainScreen

NEW_SHELL = "+new"
DEFAULT_LIMITS = Limits()
ALLOW = "allow"
#: The policies offered, in the order of what they let through.
POLICIES = (
    ("off", "no traffic at all, not even published ports"),
    ("published", "only its published ports, from the host; nothing out"),
    ("egress", "outbound to anywhere, plus its published ports"),
    (ALLOW, "outbound only to the hosts, CIDRs and ports you list"),
)


class Flows:
    def __init__(self, screen: MainScreen, controller: FleetController) -> None:
        self.screen = screen
        self.controller = controller
        self.state = controller.state

    def run(self, action_id: str) -> object:
        """The one entry point of keys and palette alike (read-only was checked before)."""
        action = BY_ID[action_id]
        if action.needs_sandbox:
            target = self._need_selection(action)
            if target is None:
                return None
            key, sandbox = target
            return getattr(self, action_id)(key, sandbox)
        return getattr(self, action_id)()

    def _need_selection(self, action: Action) -> tuple[SandboxKey, SandboxInfo] | None:
        key = self.state.selected
        sandbox = self.state.sandbox(key) if key is not None else None
        if key is None or sandbox is None:
            self.screen.notify(
                f"{action.label}: select a sandbox in the tree or the table first.",
                severity="warning",
            )
            return None
        host = self.state.hosts[split(key)[0]]
        if not host.connected:
            self.screen.notify(
                f"{host.name} is {host.link.value}: its sandboxes can't be changed until "
                "it answers again.",
                severity="warning",
            )
            return None
        return key, sandbox

    def _limits(self, host: str) -> Limits:
        info = self.state.hosts[host].info
        return info.limits if info is not None and info.limits is not None else DEFAULT_LIMITS

    def target_host(self) -> str | None:
        """Where a new sandbox goes: the selection's host, the host under the tree's cursor,
        the one host shown, or the first that answers."""
        if self.state.selected is not None:
            return split(self.state.selected)[0]
        cursor = self.screen.lineage_tree.cursor_key
        if cursor is not None:
            return split(cursor)[0]
        connected = [h.name for h in self.state.shown_hosts() if h.connected]
        return connected[0] if connected else None

    # sandboxes

    def create(self) -> None:
        host = self.target_host()
        if host is None or not self.state.hosts[host].connected:
            self.screen.notify(
                "No host answers yet: nowhere to create a sandbox.", severity="warning"
            )
            return
        environments = self.state.hosts[host].environments
        names = [e.name for e in environments]
        default = next(
            (e.name for e in environments if e.template_ready), names[0] if names else "debian:12"
        )
        gateway = self.controller.gateway(host)
        where = f" on {host}" if len(self.state.hosts) > 1 else ""

        def chosen(asked: CreateRequest | None) -> None:
            if asked is None:
                return
            self.controller.engine_action(
                f"create a sandbox from {asked.environment}{where}",
                lambda: gateway.create_sandbox(
                    asked.environment, asked.name, asked.vcpus, asked.mem_mib
                ),
                lambda s: f"Created {s.label} from {asked.environment}{where}",
            )

        self.screen.app.push_screen(
            CreateScreen(f"Create a sandbox{where}", names, default, self._limits(host)), chosen
        )

    def terminate(self, key: SandboxKey, sandbox: SandboxInfo) -> None:
        gateway, sid, label = self._target(key, sandbox)

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.controller.engine_action(
                    f"terminate {label}",
                    lambda: gateway.terminate_sandbox(sid),
                    lambda _s: f"Terminated {label}",
                )

        self.screen.app.push_screen(
            ConfirmScreen(
                f"Terminate {label}?",
                f"Sandbox {sid} ({sandbox.environment}, {sandbox.phase}) will be destroyed with "
                "its memory and disk. Forks of it keep running. This cannot be undone.",
                "Terminate",
            ),
            confirmed,
        )

    def stop(self, key: SandboxKey, sandbox: SandboxInfo) -> None:
        gateway, sid, label = self._target(key, sandbox)
        self.controller.engine_action(
            f"stop {label}", lambda: gateway.stop_sandbox(sid), lambda _s: f"Stopped {label}"
        )

    def start(self, key: SandboxKey, sandbox: SandboxInfo) -> None:
        gateway, sid, label = self._target(key, sandbox)
        self.controller.engine_action(
            f"start {label}", lambda: gateway.start_sandbox(sid), lambda _s: f"Started {label}"
        )

    def fork(self, key: SandboxKey, sandbox: SandboxInfo) -> None:
        gateway, sid, label = self._target(key, sandbox)
        cap = self._limits(split(key)[0]).max_fork_replicas

        def chosen(answer: str | None) -> None:
            if answer:
                count = int(answer)
                self.controller.engine_action(
                    f"fork {label}",
                    lambda: gateway.fork(sid, count),
                    lambda kids: f"Forked {label} into {len(kids)}",
                )

        self.screen.app.push_screen(
            AskScreen(
                f"Fork {label}",
                f"How many forks? (1 to {cap})",
                "1",
                validators=[Integer(minimum=1, maximum=cap)],
            ),
            chosen,
        )

    def snapshot(self, key: SandboxKey, sandbox: SandboxInfo) -> None:
        gateway, sid, label = self._target(key, sandbox)

        def named(name: str | None) -> None:
            if name:
                self.controller.engine_action(
                    f"snapshot {label}",
                    lambda: gateway.snapshot(sid, name),
                    lambda node: f"Snapshot {node.label} taken",
                )

        self.screen.app.push_screen(
            AskScreen(f"Snapshot {label}", "Snapshot name:", f"{label}-snap"), named
        )

    def reset(self, key: SandboxKey, sandbox: SandboxInfo) -> None:
        gateway, sid, label = self._target(key, sandbox)
        host = self.state.hosts[split(key)[0]]
        snapshots = [n.label for n in host.lineage if n.kind == "snapshot"]

        def chosen(snapshot: str | None) -> None:
            if snapshot is None:
                return
            target = snapshot or "how it was created"
            self.controller.engine_action(
                f"reset {label}",
                lambda: gateway.reset_sandbox(sid, snapshot),
                lambda _s: f"Reset {label} to {target}",
            )

        hint = f" Named snapshots: {', '.join(snapshots)}." if snapshots else ""
        self.screen.app.push_screen(
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

    def network(self, key: SandboxKey, sandbox: SandboxInfo) -> None:
        gateway, sid, label = self._target(key, sandbox)
        current = sandbox.network

        def change(policy: str) -> None:
            self.controller.engine_action(
                f"set the network policy of {label} to {policy}",
                lambda: gateway.network(sid, policy),
                lambda info: (
                    f"{label}: network {info.policy}"
                    + (
                        f", applied in {info.applied_ms:.1f} ms"
                        if info.applied_ms is not None
                        else ""
                    )
                ),
            )

        def allowed(hosts: str | None) -> None:
            if hosts:
                change(_allow_policy(hosts))

        def chosen(mode: str | None) -> None:
            if mode is None:
                return
            if mode != ALLOW:
                change(mode)
                return
            listed = current.removeprefix("allow=") if current.startswith("allow=") else ""
            self.screen.app.push_screen(
                AskScreen(
                    f"Network of {label}: allow",
                    "Outbound only to (comma-separated host names, addresses or CIDRs, each "
                    "with an optional :PORT):",
                    listed,
                    validators=[Checked(lambda text: net_policy.parse(_allow_policy(text)))],
                ),
                allowed,
            )

        options = [
            (mode, f"{mode} · {what}" + (" · now" if _mode(current) == mode else ""))
            for mode, what in POLICIES
        ]
        now = f" It has {current} now." if current else ""
        self.screen.app.push_screen(
            ChooseScreen(
                f"Network policy of {label}",
                f"What may {label} reach? A running sandbox gets the change live.{now}",
                options,
            ),
            chosen,
        )

    def _target(self, key: SandboxKey, sandbox: SandboxInfo) -> tuple[EngineGateway, str, str]:
        return self.controller.gateway(split(key)[0]), sandbox.id, sandbox.label

    # shells

    def open_shell(self, key: SandboxKey, sandbox: SandboxInfo) -> None:
        self.controller.run_worker(
            self._shell_flow(key, sandbox.label),
            group="shell-open",
            exclusive=True,
            exit_on_error=False,
        )

    async def _shell_flow(self, key: SandboxKey, label: str) -> None:
        """A new shell, or (when the sandbox has running shells) a choice to attach to one."""
        host, sandbox_id = split(key)
        try:
            shells = [
                s for s in await self.controller.gateway(host).list_shells(sandbox_id) if s.running
            ]
        except GroveError as exc:
            if exc.code != NOT_SUPPORTED:
                self.screen.post_message(ActionFailed(f"list the shells of {label}", exc))
                return
            shells = []
        choice = NEW_SHELL
        if shells:
            now = self.screen.grove.now()
            pane = self.screen.shells
            options = [(NEW_SHELL, "New shell")]
            for shell in shells:
                here = " · open in a tab" if pane.find(key, shell.shell_id) else ""
                command = " ".join(shell.argv) or "shell"
                viewers = f"{shell.viewers} viewer{'s' if shell.viewers != 1 else ''}"
                options.append(
                    (
                        shell.shell_id,
                        f"Attach to {shell.shell_id} · {command} · up "
                        f"{fmt.age(shell.created_at, now)} · {viewers}{here}",
                    )
                )
            picked = await self.screen.app.push_screen_wait(
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
        await self.screen.open_shell_tab(key, label, "" if choice == NEW_SHELL else choice)

    async def close_tab(self) -> None:
        view = await self.screen.close_tab()
        if view is not None and view.shell_id and not view.closed:
            self.screen.notify(
                f"Closed the tab; {view.shell_id} keeps running in its sandbox "
                "(o attaches to it again)."
            )

    # services

    def start_service(self, key: SandboxKey, sandbox: SandboxInfo) -> None:
        host, sid = split(key)
        gateway, label = self.controller.gateway(host), sandbox.label

        def submitted(answer: tuple[str, str, str] | None) -> None:
            if answer is None:
                return
            name, command, probe_text = answer
            try:
                argv, probe = parse_command(command), parse_probe(probe_text)
            except GroveError as exc:
                self.controller.report(exc, f"start {name}")
                return
            self.controller.engine_action(
                f"start service {name} in {label}" + (" (waiting until ready)" if probe else ""),
                lambda: gateway.start_service(sid, name, argv, probe),
                lambda info: (
                    f"Service {info.name} in {label} is {info.state}"
                    + (", ready" if info.ready else "")
                ),
                then=lambda: self.screen.open_service_log(key, label, name),
            )

        self.screen.app.push_screen(ServiceScreen(f"Start a service in {label}"), submitted)

    def stop_service(self, key: SandboxKey, sandbox: SandboxInfo) -> None:
        self._service_flow(key, sandbox.label, "stop")

    def service_logs(self, key: SandboxKey, sandbox: SandboxInfo) -> None:
        self._service_flow(key, sandbox.label, "logs")

    def _service_flow(self, key: SandboxKey, label: str, what: str) -> None:
        self.controller.run_worker(
            self._pick_service(key, label, what),
            group="service-pick",
            exclusive=True,
            exit_on_error=False,
        )

    async def _pick_service(self, key: SandboxKey, label: str, what: str) -> None:
        host, sandbox_id = split(key)
        gateway = self.controller.gateway(host)
        try:
            services = await gateway.list_services(sandbox_id)
        except GroveError as exc:
            self.screen.post_message(ActionFailed(f"list the services of {label}", exc))
            return
        if what == "stop":
            services = [s for s in services if s.active]
        if not services:
            hint = "v starts one" if what == "logs" else "nothing to stop"
            self.screen.notify(
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
            name = await self.screen.app.push_screen_wait(
                ChooseScreen(f"Services in {label}", f"{verb} which service?", options)
            )
        if name is None:
            return
        if what == "logs":
            self.screen.open_service_log(key, label, name)
            return
        chosen = name
        self.controller.engine_action(
            f"stop service {chosen} in {label}",
            lambda: gateway.stop_service(sandbox_id, chosen),
            lambda info: f"Service {info.name} in {label} is {info.state}",
        )

    # files

    def files(self, key: SandboxKey, sandbox: SandboxInfo) -> None:
        label = sandbox.label
        if self.state.transfer is not None and self.state.transfer.running:
            self.screen.notify(
                "A file transfer is under way; wait for it to finish.", severity="warning"
            )
            return

        def chosen(asked: FilesRequest | None) -> None:
            if asked is not None:
                self.controller.transfer(key, label, asked.direction, asked.local, asked.guest)

        self.screen.app.push_screen(FilesScreen(f"Files of {label}"), chosen)

    # the view

    def filter(self) -> None:
        self.screen.open_filter()

    def clear_filter(self) -> None:
        self.screen.close_filter()

    def switch_host(self) -> None:
        names = list(self.state.hosts)
        if len(names) < 2:
            self.screen.notify("Only one host is configured.", severity="warning")
            return
        options = [("", "Every host")] + [
            (n, f"{n} · {self.state.hosts[n].link.value}") for n in names
        ]

        def picked(name: str | None) -> None:
            if name is not None:
                self.state.focus_host(name or None)
                self.controller.keep_selection_visible()

        self.screen.app.push_screen(ChooseScreen("Hosts", "Show which host?", options), picked)

    def sort(self) -> None:
        self.state.cycle_sort()
        self.controller.keep_selection_visible()

    def reverse_sort(self) -> None:
        self.state.sort_by(self.state.sort_key, not self.state.sort_reverse)
        self.controller.keep_selection_visible()

    def reconnect(self) -> None:
        lost = [h.name for h in self.state.hosts.values() if not h.connected]
        self.controller.reconnect()
        self.screen.notify(f"Reconnecting to {', '.join(lost)}…" if lost else "Every host answers.")

    def show_logs(self) -> None:
        self.screen.show_tab("logs")

    def show_shells(self) -> None:
        self.screen.show_tab("shells")

    def zoom(self) -> None:
        self.screen.toggle_zoom()


def _mode(policy: str) -> str:
    return ALLOW if policy.startswith("allow=") else policy


def _allow_policy(hosts: str) -> str:
    """What was typed into the allow dialog as a policy (with or without its 'allow=')."""
    text = hosts.strip()
    return text if text.startswith("allow=") else f"allow={text}"
