"""Themes from YAML files: the bundled ones in themes/, then the user's, by name.

Search order (a later file with the same `name` wins):
  1. the bundled ones: themes/ in the source tree, shipped in the package as
     tui/bundled_themes (a link to it), so an installed wheel has them too
  2. $GROVE_HOME/themes/
  3. $XDG_CONFIG_HOME/grove/themes/ (default ~/.config/grove/themes/)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from textual.theme import Theme

from engine.config import Paths

DEFAULT_THEME = "grove-dark"
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled_themes"

_COLORS = (
    "primary",
    "secondary",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
    "success",
    "warning",
    "error",
)

#: Every custom variable our .tcss files use; a theme may override any of them.
VARIABLE_DEFAULTS: dict[str, str] = {
    "grove-running": "ansi_green",
    "grove-pending": "ansi_yellow",
    "grove-stopped": "ansi_bright_black",
    "grove-failed": "ansi_red",
    "grove-environment": "ansi_blue",
    "grove-unique": "ansi_yellow",
    "grove-shared": "ansi_green",
    "grove-cpu": "ansi_cyan",
    "grove-text-style": "none",
    "grove-pad": "0 1",
    "grove-border": "round",
}


class ThemeFileError(ValueError):
    pass


@dataclass
class ThemeSet:
    themes: dict[str, Theme] = field(default_factory=dict)
    sources: dict[str, Path] = field(default_factory=dict)
    #: Files that could not be read; shown to the user instead of crashing.
    errors: list[str] = field(default_factory=list)


def user_theme_dirs() -> list[Path]:
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return [Paths.from_env().home / "themes", Path(config) / "grove" / "themes"]


def theme_from_dict(data: Any, source: str = "<theme>") -> Theme:
    if not isinstance(data, dict):
        raise ThemeFileError(f"{source}: expected a mapping of theme keys")
    name, primary = data.get("name"), data.get("primary")
    if not isinstance(name, str) or not name:
        raise ThemeFileError(f"{source}: a theme needs a 'name'")
    if not isinstance(primary, str):
        raise ThemeFileError(f"{source}: a theme needs a 'primary' colour")
    colors = {key: str(data[key]) for key in _COLORS if data.get(key) is not None}
    variables = data.get("variables") or {}
    if not isinstance(variables, dict):
        raise ThemeFileError(f"{source}: 'variables' must be a mapping")
    extra: dict[str, float] = {}
    for key in ("luminosity_spread", "text_alpha"):
        if key in data:
            extra[key] = float(data[key])
    try:
        return Theme(
            name=name,
            dark=bool(data.get("dark", True)),
            variables={str(k): str(v) for k, v in variables.items()},
            **colors,  # type: ignore[arg-type]  # only colour keys: see _COLORS
            **extra,  # type: ignore[arg-type]
        )
    except Exception as exc:  # bad colour strings surface here
        raise ThemeFileError(f"{source}: {exc}") from None


def load_theme_file(path: Path) -> Theme:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ThemeFileError(f"{path}: {exc}") from None
    return theme_from_dict(data, str(path))


def load_themes(include_user: bool = True, extra_dirs: list[Path] | None = None) -> ThemeSet:
    found = ThemeSet()
    dirs = [BUNDLED_DIR, *(user_theme_dirs() if include_user else []), *(extra_dirs or [])]
    for directory in dirs:
        if not directory.is_dir():
            continue
        for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
            try:
                theme = load_theme_file(path)
            except ThemeFileError as exc:
                found.errors.append(str(exc))
                continue
            found.themes[theme.name] = theme
            found.sources[theme.name] = path
    return found
