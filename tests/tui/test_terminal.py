"""The terminal widget against a real local PTY (bash, or sh), driven through Pilot."""

from __future__ import annotations

import asyncio
import random
import shutil
from collections.abc import Callable

import pytest
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets import Button

from tui.local_shell import LocalShell
from tui.widgets.terminal import PtyTerminal, VTScreen, encode_key

PROMPT = "$ "


class TermApp(App[None]):
    """A terminal wired to a local shell, as the dashboard's shell tabs wire a guest one."""

    def __init__(self, argv: list[str] | None = None) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.shell = LocalShell(argv, env={"PS1": PROMPT, "PS2": "> ", "HISTFILE": "/dev/null"})
        self.outbox: asyncio.Queue[bytes | tuple[int, int]] = asyncio.Queue()

    def compose(self) -> ComposeResult:
        yield PtyTerminal(send=self._send, resize=self._resize, id="term")
        yield Button("elsewhere", id="other")

    def _send(self, data: bytes) -> None:
        self.sent.append(data)
        self.outbox.put_nowait(data)

    def _resize(self, cols: int, rows: int) -> None:
        self.outbox.put_nowait((cols, rows))

    async def on_mount(self) -> None:
        await self.shell.start()
        self.run_worker(self._pump(), group="io")
        self.run_worker(self._writer(), group="io")
        self.query_one(PtyTerminal).focus()

    async def _pump(self) -> None:
        term = self.query_one(PtyTerminal)
        async for chunk in self.shell.output():
            term.feed(chunk)

    async def _writer(self) -> None:
        while True:
            item = await self.outbox.get()
            if isinstance(item, tuple):
                await self.shell.resize(*item)
            else:
                await self.shell.write(item)

    async def on_unmount(self) -> None:
        await self.shell.close()


def rendered_text(term: PtyTerminal) -> str:
    return "\n".join(term.render_line(y).text.rstrip() for y in range(term.size.height))


async def wait_for(pilot: Pilot[None], predicate: Callable[[], bool], timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            term = pilot.app.query_one(PtyTerminal)
            raise AssertionError("timed out; screen:\n" + "\n".join(term.all_lines()[-30:]))
        await pilot.pause(0.02)


async def wait_prompt(pilot: Pilot[None], term: PtyTerminal) -> None:
    await wait_for(pilot, lambda: any(line.startswith("$") for line in term.screen_lines()))


async def run_line(pilot: Pilot[None], text: str) -> None:
    """Type a command key by key, as a person would."""
    await pilot.press(*[("space" if c == " " else c) for c in text], "enter")


def send_line(app: TermApp, text: str) -> None:
    """Send a long command straight to the PTY (typing it adds nothing but seconds)."""
    app.outbox.put_nowait(text.encode() + b"\r")


async def test_echo_hi() -> None:
    app = TermApp()
    async with app.run_test(size=(80, 24)) as pilot:
        term = app.query_one(PtyTerminal)
        await wait_prompt(pilot, term)
        await run_line(pilot, "echo hi")
        await wait_for(pilot, lambda: "hi" in term.screen_lines())
        assert "hi" in rendered_text(term).splitlines()


async def test_output_scrolls_into_history_and_view_follows() -> None:
    app = TermApp()
    async with app.run_test(size=(80, 24)) as pilot:
        term = app.query_one(PtyTerminal)
        await wait_prompt(pilot, term)
        send_line(app, "seq 1 200")
        await wait_for(
            pilot, lambda: term.screen_lines()[-2:-1] == ["200"] or "200" in term.screen_lines()
        )
        await pilot.pause(0.1)
        shown = rendered_text(term).splitlines()
        assert "200" in shown and "1" not in shown  # the view follows the bottom
        assert term.all_lines()[:3] == [f"{PROMPT}seq 1 200".rstrip(), "1", "2"]
        term.scroll_home(animate=False, immediate=True)
        await pilot.pause()
        assert rendered_text(term).splitlines()[1] == "1"  # history is reachable


async def test_resize_reaches_pty() -> None:
    app = TermApp()
    async with app.run_test(size=(100, 30)) as pilot:
        term = app.query_one(PtyTerminal)
        await wait_prompt(pilot, term)
        cols, rows = term.vt.columns, term.vt.lines
        # The VT matches the visible area minus the vertical scrollbar.
        assert (cols, rows) == (term.scrollable_content_region.width, term.size.height)
        await run_line(pilot, "stty size")
        await wait_for(pilot, lambda: f"{rows} {cols}" in term.screen_lines())
        await pilot.resize_terminal(60, 20)
        await wait_for(pilot, lambda: term.vt.columns < cols)
        cols2, rows2 = term.vt.columns, term.vt.lines
        assert cols2 < cols and rows2 < rows
        await run_line(pilot, "stty size")
        await wait_for(pilot, lambda: f"{rows2} {cols2}" in term.screen_lines())


async def test_keys_reach_the_program_and_escape_key_leaves() -> None:
    app = TermApp(["cat"])
    async with app.run_test(size=(80, 24)) as pilot:
        term = app.query_one(PtyTerminal)
        await pilot.pause(0.1)
        app.sent.clear()
        await pilot.press("tab", "ctrl+p", "ctrl+c", "up", "f5", "a")
        await pilot.pause(0.05)
        assert b"".join(app.sent) == b"\t\x10\x03\x1b[A\x1b[15~a"
        assert app.focused is term
        assert not app.screen.is_modal  # ctrl+p went to the program, not the command palette
        await pilot.press("ctrl+right_square_bracket")
        await pilot.pause()
        assert app.focused is not term


def test_encode_key_table() -> None:
    assert encode_key("up", None) == "\x1b[A"
    assert encode_key("up", None, app_cursor=True) == "\x1bOA"
    assert encode_key("ctrl+up", None) == "\x1b[1;5A"
    assert encode_key("shift+f5", None) == "\x1b[15;2~"
    assert encode_key("f1", None) == "\x1bOP"
    assert encode_key("alt+x", "x") == "\x1bx"
    assert encode_key("ctrl+a", None) == "\x01"
    assert encode_key("shift+tab", None) == "\x1b[Z"
    assert encode_key("pagedown", None) == "\x1b[6~"
    assert encode_key("é", "é") == "é"


async def test_colors_render() -> None:
    app = TermApp()
    async with app.run_test(size=(80, 24)) as pilot:
        term = app.query_one(PtyTerminal)
        await wait_prompt(pilot, term)
        send_line(
            app,
            r"printf '\033[1;31mRED\033[0m \033[38;5;208mORA\033[0m "
            r"\033[38;2;1;2;3mTRUE\033[0m\n'",
        )
        await wait_for(pilot, lambda: any(ln.startswith("RED ORA") for ln in term.screen_lines()))
        y = next(i for i, line in enumerate(term.screen_lines()) if line.startswith("RED ORA"))
        history = len(term.vt.scrollback)
        strip = term.render_line(history + y - round(term.scroll_y))
        styles = {seg.text.strip(): seg.style for seg in strip if seg.text.strip()}
        red = styles["RED"]
        assert red is not None and red.bold and red.color is not None
        assert red.color.name == "red"
        assert styles["ORA"] is not None and styles["ORA"].color is not None
        assert styles["ORA"].color.get_truecolor() == (255, 135, 0)  # xterm colour 208
        true = styles["TRUE"]
        assert true is not None and true.color is not None and true.color.triplet is not None
        assert tuple(true.color.triplet) == (1, 2, 3)


@pytest.mark.skipif(not (shutil.which("vim") or shutil.which("vi")), reason="no vi installed")
async def test_vim_alt_screen_and_quit(tmp_path: object) -> None:
    vim = shutil.which("vim") or shutil.which("vi")
    app = TermApp()
    async with app.run_test(size=(90, 26)) as pilot:
        term = app.query_one(PtyTerminal)
        await wait_prompt(pilot, term)
        send_line(app, "echo before-vim")
        await wait_for(pilot, lambda: "before-vim" in term.screen_lines())
        send_line(app, f"{vim} -u NONE -N {tmp_path}/x.txt")
        await wait_for(pilot, lambda: term.vt.in_alt_screen)
        await pilot.press("i", *"hello", "escape")
        await wait_for(pilot, lambda: any("hello" in line for line in term.screen_lines()))
        # vim's modifyOtherKeys request must not leave the text underlined.
        assert not any(
            term.vt.buffer[y][x].underscore for y in range(term.vt.lines) for x in range(5)
        )
        await pilot.press(":", "w", "q", "enter")
        await wait_for(pilot, lambda: not term.vt.in_alt_screen)
        await wait_for(pilot, lambda: "before-vim" in term.screen_lines())
        send_line(app, f"cat {tmp_path}/x.txt")
        await wait_for(pilot, lambda: "hello" in term.screen_lines())


def test_vtscreen_shrink_keeps_content() -> None:
    vt = VTScreen(20, 10)
    stream = __import__("pyte").ByteStream(vt)
    stream.feed(b"".join(b"line%d\r\n" % i for i in range(6)) + b"$ ")
    assert vt.cursor.y == 6
    vt.resize(4, 20)  # lose 6 rows: 3 blank ones below the cursor, then 3 into history
    assert [line.rstrip() for line in vt.display] == ["line3", "line4", "line5", "$"]
    assert vt.cursor.y == 3
    texts = ["".join(row[x].data for x in range(20)).rstrip() for _, row in vt.scrollback]
    assert texts == ["line0", "line1", "line2"]
    vt.resize(10, 20)  # growing pulls history back
    assert [line.rstrip() for line in vt.display][:7] == [f"line{i}" for i in range(6)] + ["$"]


def test_private_sgr_does_not_crash_or_style() -> None:
    vt = VTScreen(20, 3)
    term_filter = __import__("tui.widgets.terminal", fromlist=["x"]).PrivateCsiFilter()
    stream = __import__("pyte").ByteStream(vt)
    for chunk in (b"\x1b[?4m\x1b[", b">4;2m", b"ok\x1b[?1;2r"):
        stream.feed(term_filter.filter(chunk))
    assert vt.display[0].rstrip() == "ok"
    assert not vt.buffer[0][0].underscore


def test_plain_fast_path_matches_pyte() -> None:
    """Lines of plain text skip pyte; whatever the chunking, the screen, the cursor and the
    scrollback must come out exactly as pyte alone makes them."""
    rng = random.Random(7)
    pieces = [
        lambda: "".join(f"{rng.randint(0, 10**9)}\r\n" for _ in range(rng.randint(0, 90))),
        lambda: "\x1b[31mred\x1b[0m and plain\r\n",
        lambda: "x" * rng.randint(75, 100) + "\r\n",  # wraps
        lambda: "progress 10%\rprogress 99%\r\n",  # overstrikes
        lambda: "bare\nline feeds\n",
        lambda: "é € wide 中文\r\n",
        lambda: "\x1b[2J\x1b[H",  # clear and home: the cursor leaves the bottom row
    ]
    for _ in range(150):
        data = "".join(rng.choice(pieces)() for _ in range(rng.randint(1, 25))).encode()
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 12))))
        fast, slow = (
            PtyTerminal(cols=80, rows=24, history=300),
            PtyTerminal(cols=80, rows=24, history=300),
        )
        for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
            fast.feed(data[start:end], paint=False)
            fast.drain()
            slow._stream.feed(data[start:end])
        assert fast.all_lines() == slow.all_lines()
        assert (fast.vt.cursor.x, fast.vt.cursor.y) == (slow.vt.cursor.x, slow.vt.cursor.y)
        assert fast.vt.scrollback_serial == slow.vt.scrollback_serial


def test_plain_burst_lands_in_scrollback_in_order() -> None:
    term = PtyTerminal(cols=80, rows=24, history=1000)
    data = "".join(f"{i}\r\n" for i in range(1, 20001)).encode()
    for start in range(0, len(data), 4096):
        term.feed(data[start : start + 4096], paint=False)
        term.drain()
    lines = term.all_lines()
    assert lines[-3:] == ["19999", "20000", ""]
    assert lines[0] == str(20000 - 1000 - 22)  # the scrollback keeps its last 1000 rows
    assert term.vt.scrollback_serial == 20000 - 23
