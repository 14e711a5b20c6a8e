"""Theme colours for Rich text (tree labels, table cells), which CSS variables cannot reach."""

from __future__ import annotations

from collections.abc import Mapping

from rich.style import Style
from textual.color import Color

PHASE_ICONS = {
    "running": "●",
    "paused": "◐",
    "creating": "◌",
    "starting": "◌",
    "resetting": "◌",
    "stopping": "◌",
    "terminating": "◌",
    "stopped": "○",
    "failed": "✖",
    "terminated": "·",
}
_PHASE_VARIABLE = {
    "running": "grove-running",
    "paused": "grove-pending",
    "creating": "grove-pending",
    "starting": "grove-pending",
    "resetting": "grove-pending",
    "stopping": "grove-pending",
    "terminating": "grove-pending",
    "stopped": "grove-stopped",
    "terminated": "grove-stopped",
    "failed": "grove-failed",
}


class Palette:
    """Rich styles for the current theme's `grove-*` variables."""

    def __init__(self, variables: Mapping[str, str]) -> None:
        self._variables = dict(variables)
        self.bold = self._variables.get("grove-text-style", "none") == "bold"
        self._styles: dict[tuple[str, bool], Style] = {}  # asked for per cell, every second

    def style(self, variable: str, bold: bool = False) -> Style:
        key = (variable, bold)
        style = self._styles.get(key)
        if style is None:
            value = self._variables.get(variable)
            try:
                color = Color.parse(value).rich_color if value else None
            except Exception:
                color = None
            style = self._styles[key] = Style(color=color, bold=bold or self.bold or None)
        return style

    def phase(self, phase: str) -> Style:
        return self.style(_PHASE_VARIABLE.get(phase, "grove-stopped"))

    @staticmethod
    def icon(phase: str) -> str:
        return PHASE_ICONS.get(phase, "?")
