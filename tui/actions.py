"""Every dashboard action, once: the key bindings, the command palette, the key map screen and
read-only mode are all generated from this table, so they cannot disagree.

Each binding carries an id (`grove.<action>`), and `~/.config/grove/keymap.yaml` maps ids to
other keys (`fork: ctrl+f`), as Posting's keymap does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from textual.binding import Binding

ID_PREFIX = "grove."


@dataclass(frozen=True)
class Action:
    id: str
    key: str
    #: The footer's short label.
    label: str
    #: What it does, said in full (help screen, tooltip, palette help).
    help: str
    #: The palette's title; {label} is the selected sandbox's name, {host} the host's.
    title: str = ""
    #: Changes something on an engine: refused in read-only mode.
    mutating: bool = False
    #: Acts on the selected sandbox.
    needs_sandbox: bool = False
    show: bool = False
    key_display: str | None = None
    #: Offered in the command palette.
    palette: bool = True

    @property
    def binding_id(self) -> str:
        return ID_PREFIX + self.id

    def palette_title(self, sandbox: str, host: str) -> str:
        return (self.title or self.label).format(label=sandbox, host=host)


ACTIONS: tuple[Action, ...] = (
    Action(
        "create",
        "c",
        "Create",
        "Create a sandbox from an environment",
        "Create a sandbox on {host}",
        mutating=True,
        show=True,
    ),
    Action(
        "terminate",
        "d",
        "Terminate",
        "Destroy the selected sandbox (asks first)",
        "Terminate {label}",
        mutating=True,
        needs_sandbox=True,
        show=True,
    ),
    Action(
        "stop",
        "x",
        "Stop",
        "Stop the sandbox (its disk is kept)",
        "Stop {label}",
        mutating=True,
        needs_sandbox=True,
        show=True,
    ),
    Action(
        "start",
        "u",
        "Start",
        "Start a stopped sandbox from its disk",
        "Start {label}",
        mutating=True,
        needs_sandbox=True,
        show=True,
    ),
    Action(
        "open_shell",
        "o",
        "Shell",
        "Open a shell, or attach to a running one",
        "Open a shell in {label}",
        mutating=True,
        needs_sandbox=True,
        show=True,
    ),
    Action(
        "fork",
        "F",
        "Fork",
        "Snapshot-fork the sandbox into N children",
        "Fork {label}",
        mutating=True,
        needs_sandbox=True,
        show=True,
    ),
    Action(
        "snapshot",
        "P",
        "Snapshot",
        "Take a named snapshot (a lineage node)",
        "Snapshot {label}",
        mutating=True,
        needs_sandbox=True,
    ),
    Action(
        "reset",
        "R",
        "Reset",
        "Reset to a named snapshot, or to how it was created",
        "Reset {label}",
        mutating=True,
        needs_sandbox=True,
    ),
    Action(
        "network",
        "N",
        "Network policy",
        "Set what the sandbox may reach: off, published, egress or allow=HOST[:PORT],...",
        "Network policy of {label}",
        mutating=True,
        needs_sandbox=True,
    ),
    Action(
        "start_service",
        "v",
        "Service",
        "Start a service in the sandbox",
        "Start a service in {label}",
        mutating=True,
        needs_sandbox=True,
        show=True,
    ),
    Action(
        "stop_service",
        "V",
        "Stop service",
        "Stop one of the sandbox's services",
        "Stop a service in {label}",
        mutating=True,
        needs_sandbox=True,
    ),
    Action(
        "service_logs",
        "L",
        "Service log",
        "Follow a service's log in a tab",
        "Follow a service log of {label}",
        needs_sandbox=True,
    ),
    Action(
        "files",
        "f",
        "Files",
        "Push a local file or directory into the sandbox, or pull one out of it",
        "Push or pull files of {label}",
        mutating=True,
        needs_sandbox=True,
    ),
    Action(
        "close_tab",
        "C",
        "Close tab",
        "Close the shell or log tab (a shell keeps running)",
        "Close the shell or log tab",
    ),
    Action(
        "filter",
        "slash",
        "Filter",
        "Filter the tree and table (name, id, phase, env, host)",
        "Filter sandboxes",
        show=True,
        key_display="/",
    ),
    Action("switch_host", "H", "Host", "Show one host only, or every host again", "Switch host"),
    Action("sort", "s", "Sort", "Sort the table by the next column", "Sort by the next column"),
    Action("reverse_sort", "S", "Reverse sort", "Reverse the table's order", "Reverse the sort"),
    Action(
        "reconnect",
        "r",
        "Reconnect",
        "Reconnect now to hosts that were lost",
        "Reconnect lost hosts",
    ),
    Action("show_logs", "l", "Events", "Show the lifecycle events", "Show lifecycle events"),
    Action("show_shells", "h", "Shells", "Show the shell tabs", "Show the shell tabs"),
    Action("zoom", "z", "Zoom", "Zoom: logs and shells take the whole screen", "Zoom the tabs"),
    Action("clear_filter", "escape", "Clear filter", "Clear the filter", palette=False),
)

BY_ID: Mapping[str, Action] = {a.id: a for a in ACTIONS}
MUTATING = frozenset(a.id for a in ACTIONS if a.mutating)


def bindings(actions: Iterable[Action] = ACTIONS) -> list[Binding]:
    return [
        Binding(
            a.key,
            f"run('{a.id}')",
            a.label,
            show=a.show,
            key_display=a.key_display,
            tooltip=a.help,
            id=a.binding_id,
        )
        for a in actions
    ]


def keymap_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "grove" / "keymap.yaml"


def load_keymap(path: Path | None = None) -> tuple[dict[str, str], list[str]]:
    """The user's remapped keys as Textual's keymap ({binding id: keys}), and what was wrong.

    A bad file or entry is skipped with a message: a typo must not keep the dashboard shut.
    """
    path = path or keymap_path()
    if not path.exists():
        return {}, []
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        return {}, [f"{path}: cannot read it ({exc}); using the default keys"]
    if isinstance(data, dict) and isinstance(data.get("keymap"), dict):
        data = data["keymap"]  # the same shape as Posting's config section
    if not isinstance(data, dict):
        return {}, [f"{path}: expected 'action: key' lines; using the default keys"]
    keymap: dict[str, str] = {}
    errors: list[str] = []
    for name, keys in data.items():
        action = str(name).removeprefix(ID_PREFIX)
        if action not in BY_ID:
            known = ", ".join(sorted(BY_ID))
            errors.append(f"{path}: no action '{name}' (actions: {known})")
        elif not isinstance(keys, str) or not keys.strip():
            errors.append(f"{path}: '{name}' needs a key such as ctrl+f")
        else:
            keymap[BY_ID[action].binding_id] = keys.strip()
    return keymap, errors
