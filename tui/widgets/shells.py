"""Shell tabs: each one a PtyTerminal wired to a ShellSession (guest PTY or local)."""

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
    "Select a running sandbox and press [b]o[/b] (or use the command palette) to open one.\n"
    "Inside a shell every key goes to the sandbox; press [b]ctrl+][/b] to come back.\n"
    "Press [b]z[/b] to give logs and shells the whole screen, [b]h[/b] to return to a shell."
)


class ShellView(Vertical):
    """Pumps bytes between one session and its terminal; writes stay in order via one queue."""

    @dataclass
    class Exited(Message):
        view: ShellView
        exit_code: int | None

    def __init__(self, session: ShellSession, title: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.session = session
        self.title = title
        self._outbox: asyncio.Queue[bytes | tuple[int, int]] = asyncio.Queue()
        self.closed = False

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
        async for chunk in self.session.output():
            self.terminal.feed(chunk)
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
        await self.session.close()


class ShellsPane(Vertical):
    def compose(self) -> ComposeResult:
        with TabbedContent(id="shell-tabs"), TabPane("no shells", id="shell-placeholder"):
            yield Static(PLACEHOLDER, classes="placeholder")

    async def open(self, session: ShellSession, title: str) -> ShellView:
        tabs = self.query_one("#shell-tabs", TabbedContent)
        pane_id = f"shell-{next(_ids)}"
        view = ShellView(session, title)
        await tabs.add_pane(TabPane(title, view, id=pane_id))
        if tabs.query("#shell-placeholder"):
            await tabs.remove_pane("shell-placeholder")
        tabs.active = pane_id
        view.terminal.focus()
        return view

    @property
    def views(self) -> list[ShellView]:
        return list(self.query(ShellView))

    def on_shell_view_exited(self, event: ShellView.Exited) -> None:
        tabs = self.query_one("#shell-tabs", TabbedContent)
        pane = event.view.parent
        if isinstance(pane, TabPane) and pane.id:
            tabs.get_tab(pane.id).label = f"{event.view.title} (ended)"
