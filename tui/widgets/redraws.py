"""Widgets that draw a part of DashboardState: bound to the screen's revision reactives, they
draw once per state change however many of their revisions moved in it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Redraws:
    """Mix in after the widget class (Textual reads CSS and component classes from the first
    base); declare the `*_rev` reactives drawn from, and `draw()`.

    Textual only calls the watchers of reactives a class declares, so each widget gets the
    ones it binds and no others."""

    _draw_pending = False

    def draw(self) -> None:
        raise NotImplementedError

    def call_later(self, callback: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        raise NotImplementedError  # the widget's own comes first in the MRO

    def _revised(self) -> None:
        if not self._draw_pending:
            self._draw_pending = True
            self.call_later(self._draw_now)

    def _draw_now(self) -> None:
        self._draw_pending = False
        self.draw()

    def watch_hosts_rev(self) -> None:
        self._revised()

    def watch_tree_rev(self) -> None:
        self._revised()

    def watch_meters_rev(self) -> None:
        self._revised()

    def watch_selection_rev(self) -> None:
        self._revised()

    def watch_view_rev(self) -> None:
        self._revised()

    def watch_services_rev(self) -> None:
        self._revised()

    def watch_events_rev(self) -> None:
        self._revised()

    def watch_transfer_rev(self) -> None:
        self._revised()
