"""Shell tabs: each one a PtyTerminal wired to a ShellSession (guest PTY or local).

Closing a tab detaches: the engine keeps the shell (and its scrollback) running in the
sandbox, and attaching to it again replays what it printed meanwhile.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from itertools import count

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Static, TabbedContent, TabPane

from tui.engine.gateway import ShellSession
from tui.widgets.terminal import PtyTerminal

_ids = count(1)
PLACEHOLDER = (
    "No shells open.\n\n"
    "Select a running sandbox and press [b]o[/b] (or use the command palette) to open one,\n"
    "or to attach again to a shell that is still running there (its scrollback comes back).\n"
    "Inside a shell every key goes to the sandbox; press [b]ctrl+][/b] to come back.\n"
    "[b]C[/b] closes the tab (the shell keeps running); [b]z[/b] gives logs and shells the "
    "whole screen."
)


class ShellView(Vertical):
    """Pumps bytes between one session and its terminal; writes stay in order via one queue."""

    @dataclass
    class Exited(Message):
        view: ShellView
        exit_code: int | None

    def __init__(
        self, session: ShellSession, title: str, sandbox_id: str = "", *, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.session = session
        self.title = title
        self.sandbox_id = sandbox_id
        self._outbox: asyncio.Queue[bytes | tuple[int, int]] = asyncio.Queue()
        self.closed = False

    @property
    def shell_id(self) -> str:
        return self.session.shell_id

    def compose(self) -> ComposeResult:
        yield PtyTerminal(send=self._outbox.put_nowait, resize=self._queue_resize)

    @property
    def terminal(self) -> PtyTerminal:
        return self.query_one(PtyTerminal)

    def _queue_resize(self, cols: int, rows: int) -> None:
        self._outbox.put_nowait((cols, rows))

    def on_mount(self) -> None:
        self._pump()
        self._writer()

    @work(group="shell-io", exit_on_error=False)
    async def _pump(self) -> None:
        try:
            async for chunk in self.session.output():
                self.terminal.feed(chunk)
        finally:
            self.closed = True
        self.terminal.feed(b"\r\n\x1b[2m[session ended]\x1b[0m\r\n")
        self.post_message(self.Exited(self, self.session.exit_code))

    @work(group="shell-io", exit_on_error=False)
    async def _writer(self) -> None:
        while True:
            item = await self._outbox.get()
            if self.closed:
                continue
            if isinstance(item, tuple):
                await self.session.resize(*item)
            else:
                await self.session.write(item)

    async def on_unmount(self) -> None:
        self.closed = True
        await self.session.close()


class ShellsPane(Vertical):
    def compose(self) -> ComposeResult:
        with TabbedContent(id="shell-tabs"), TabPane("no shells", id="shell-placeholder"):
            yield Static(PLACEHOLDER, classes="placeholder")

    @property
    def tabs(self) -> TabbedContent:
        return self.query_one("#shell-tabs", TabbedContent)

    async def open(self, session: ShellSession, title: str, sandbox_id: str = "") -> ShellView:
        tabs = self.tabs
        pane_id = f"shell-{next(_ids)}"
        view = ShellView(session, title, sandbox_id)
        await tabs.add_pane(TabPane(title, view, id=pane_id))
        if tabs.query("#shell-placeholder"):
            await tabs.remove_pane("shell-placeholder")
        tabs.active = pane_id
        view.terminal.focus()
        return view

    @property
    def views(self) -> list[ShellView]:
        return list(self.query(ShellView))

    def find(self, sandbox_id: str, shell_id: str) -> ShellView | None:
        """The tab already showing this shell, if any (a second viewer would echo twice)."""
        for view in self.views:
            if shell_id and view.shell_id == shell_id and view.sandbox_id == sandbox_id:
                return view
        return None

    def activate(self, view: ShellView) -> None:
        pane = view.parent
        if isinstance(pane, TabPane) and pane.id:
            self.tabs.active = pane.id
            view.terminal.focus()

    @property
    def active_view(self) -> ShellView | None:
        pane = self.tabs.active_pane
        if pane is None:
            return None
        views = list(pane.query(ShellView))
        return views[0] if views else None

    async def close_active(self) -> ShellView | None:
        """Close the current tab; its session detaches (the shell keeps running)."""
        view = self.active_view
        pane = view.parent if view is not None else None
        if view is None or not isinstance(pane, TabPane) or not pane.id:
            return None
        tabs = self.tabs
        if len(self.views) == 1:
            await tabs.add_pane(
                TabPane(
                    "no shells", Static(PLACEHOLDER, classes="placeholder"), id="shell-placeholder"
                )
            )
        await tabs.remove_pane(pane.id)
        return view

    def on_shell_view_exited(self, event: ShellView.Exited) -> None:
        pane = event.view.parent
        if isinstance(pane, TabPane) and pane.id:
            self.tabs.get_tab(pane.id).label = f"{event.view.title} (ended)"
