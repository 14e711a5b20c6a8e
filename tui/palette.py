"""Theme colours for Rich text (tree labels, table cells), which CSS variables cannot reach."""

from __future__ import annotations

from collections.abc import Mapping

from rich.style import Style
from textual.color import Color

PHASE_ICONS = {
    "running": "●",
    "paused": "◐",
    "creating": "◌",
    "stopped": "○",
    "failed": "✖",
    "terminated": "·",
}
_PHASE_VARIABLE = {
    "running": "grove-running",
    "paused": "grove-pending",
    "creating": "grove-pending",
    "stopped": "grove-stopped",
    "terminated": "grove-stopped",
    "failed": "grove-failed",
}


class Palette:
    """Rich styles for the current theme's `grove-*` variables."""

    def __init__(self, variables: Mapping[str, str]) -> None:
        self._variables = dict(variables)
        self.bold = self._variables.get("grove-text-style", "none") == "bold"

    def style(self, variable: str, bold: bool = False) -> Style:
        value = self._variables.get(variable)
        try:
            color = Color.parse(value).rich_color if value else None
        except Exception:
            color = None
        return Style(color=color, bold=bold or self.bold or None)

    def phase(self, phase: str) -> Style:
        return self.style(_PHASE_VARIABLE.get(phase, "grove-stopped"))

    @staticmethod
    def icon(phase: str) -> str:
        return PHASE_ICONS.get(phase, "?")
