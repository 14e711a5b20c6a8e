"""An embedded terminal: pyte parses the byte stream, a line-API ScrollView paints it.

The widget knows nothing about where bytes come from. Output goes in through `feed(bytes)`;
keystrokes come out through the `send(bytes)` callback and size changes through
`resize(cols, rows)`. That fits a local PTY in tests and a guest PTY behind the engine alike.

pyte 0.8.2 is patched here (see `VTScreen`): private SGR (`CSI ? ... m`, `CSI > 4;2 m` from vim)
crashed or mis-styled it, it had no alternate screen, it lost rows from the top on shrink, and
its `HistoryScreen` is several times slower than keeping our own scrollback.

pyte parses about half a megabyte a second, one character at a time. Output that is only
lines of plain text (`seq`, `cat` of a log, a build) takes a fast path instead: whole lines go
to the scrollback as strings, and only the rows left on screen become pyte cells. That keeps
a burst from queueing up behind the parser, so a key's echo is not stuck behind it either.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any, ClassVar, NamedTuple

import pyte
from pyte.screens import Char, Margins, StaticDefaultDict
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.timer import Timer

Row = StaticDefaultDict[int, Char]
#: A scrollback row: pyte cells, or (from the plain-text fast path) a string in the default style.
HistoryRow = Row | str
SendCallback = Callable[[bytes], None]
ResizeCallback = Callable[[int, int], None]

FRAME = 1 / 60
#: Output is parsed in slices; pyte (the slow path) stops for the frame after this long.
SLICE = 64 * 1024
PARSE_BUDGET = 0.012
#: DEC private modes as pyte stores them (shifted left by 5).
DECCKM = 1 << 5
BRACKETED_PASTE = 2004 << 5
ALT_SCREEN_MODES = frozenset({47, 1047, 1049})


class PrivateCsiFilter:
    """Drops `CSI <`, `CSI =` and `CSI >` sequences before pyte sees them.

    pyte ignores the `>` prefix and then applies the parameters as if they were plain: vim's
    modifyOtherKeys request `CSI > 4;2 m` turned every later cell underlined. None of these
    sequences draws anything, so dropping them is safe; their queries simply go unanswered.
    A sequence split across chunks is held back until its end arrives.
    """

    _SEQUENCE = re.compile(rb"\x1b\[[<=>][\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]")
    _PARTIAL = re.compile(rb"\x1b(?:\[(?:[<=>][\x20-\x3f]*)?)?\Z")
    _MAX_HELD = 64

    def __init__(self) -> None:
        self._held = b""

    def filter(self, data: bytes) -> bytes:
        if self._held:
            data, self._held = self._held + data, b""
        if b"\x1b" not in data:
            return data
        data = self._SEQUENCE.sub(b"", data)
        partial = self._PARTIAL.search(data)
        if partial and len(data) - partial.start() <= self._MAX_HELD:
            self._held = data[partial.start() :]
            data = data[: partial.start()]
        return data


def _new_buffer(default: Callable[[], Char]) -> defaultdict[int, StaticDefaultDict[int, Char]]:
    return defaultdict(lambda: StaticDefaultDict(default()))


class VTScreen(pyte.Screen):  # type: ignore[misc]
    """pyte.Screen with scrollback, an alternate screen and xterm-like resizing."""

    def __init__(
        self, columns: int, lines: int, history: int = 5000, reply: Callable[[str], None] = print
    ) -> None:
        self.scrollback: deque[tuple[int, HistoryRow]] = deque(maxlen=history)
        self.scrollback_serial = 0
        self.in_alt_screen = False
        self._main: tuple[Any, int, int] | None = None
        self._reply = reply
        super().__init__(columns, lines)

    # -- scrollback

    def _push_scrollback(self, row: Row) -> None:
        self.scrollback_serial += 1
        self.scrollback.append((self.scrollback_serial, row))

    def index(self) -> None:
        top, bottom = self.margins or Margins(0, self.lines - 1)
        if (
            not self.in_alt_screen
            and self.cursor.y == bottom
            and top == 0
            and bottom == self.lines - 1
        ):
            # pyte drops the top row on scroll; the row object is not reused, so keep it.
            self._push_scrollback(self.buffer[0])
        super().index()

    def as_row(self, entry: HistoryRow) -> Row:
        if not isinstance(entry, str):
            return entry
        row: Row = StaticDefaultDict(self.default_char)
        for x, char in enumerate(entry[: self.columns]):
            row[x] = self.default_char._replace(data=char)
        return row

    # -- the plain-text fast path

    def plain_ready(self) -> bool:
        """Whether plain lines may bypass pyte: the cursor on a blank bottom row at column 0,
        the whole screen scrolling, default attributes and character set, no insert mode."""
        bottom = self.lines - 1
        return (
            not self.in_alt_screen
            and self.cursor.x == 0
            and self.cursor.y == bottom
            and self.margins in (None, Margins(0, bottom))
            and self.cursor.attrs == self.default_char
            and self.charset == 0
            and self.g0_charset is pyte.charsets.LAT1_MAP
            and pyte.modes.IRM not in self.mode
            and all(c == self.default_char for c in self.buffer[bottom].values())
        )

    def plain_lines(self, lines: list[str]) -> None:
        """As if each line were drawn on the bottom row and followed by CR LF (a scroll).

        Rows leave the screen in order: the current ones above the cursor, then the lines;
        the last lines - 1 of them stay, above a blank bottom row.
        """
        count = len(lines)
        if not count:
            return
        bottom = self.lines - 1
        rows: list[HistoryRow] = [self.buffer[y] for y in range(bottom)]
        rows += lines
        gone, kept = rows[:count], rows[count:]
        first_serial = self.scrollback_serial + 1
        self.scrollback_serial += count
        # Only what the deque keeps is worth appending.
        keep = self.scrollback.maxlen or count
        for offset, row in enumerate(gone[-keep:], start=count - min(count, keep)):
            self.scrollback.append((first_serial + offset, row))
        buffer = _new_buffer(lambda: self.default_char)
        for y, entry in enumerate(kept):
            buffer[y] = self.as_row(entry)
        self.buffer = buffer
        self.dirty.update(range(self.lines))

    def erase_in_display(self, how: int = 0, *args: Any, **kwargs: Any) -> None:
        if how == 3:  # xterm: clear the scrollback too
            self.scrollback.clear()
            self.dirty.update(range(self.lines))
            return
        super().erase_in_display(how, *args, **kwargs)

    # -- pyte crash fixes: DEC private variants pyte's handlers do not accept

    def select_graphic_rendition(self, *attrs: int, private: bool = False) -> None:
        if private:
            return
        super().select_graphic_rendition(*attrs)

    def set_margins(
        self, top: int | None = None, bottom: int | None = None, private: bool = False
    ) -> None:
        if private:  # `CSI ? r` restores DEC modes in xterm; unrelated to margins
            return
        super().set_margins(top, bottom)

    def write_process_input(self, data: str) -> None:
        # Device status and attribute replies (cursor position queries from vim, less...).
        self._reply(data)

    # -- alternate screen (1049 saves the cursor too; 1047 clears the alt buffer on leave)

    def set_mode(self, *modes: int, **kwargs: Any) -> None:
        if kwargs.get("private"):
            alt = [m for m in modes if m in ALT_SCREEN_MODES]
            if alt:
                self._enter_alt_screen(save_cursor=1049 in alt)
                modes = tuple(m for m in modes if m not in ALT_SCREEN_MODES)
                if not modes:
                    return
        super().set_mode(*modes, **kwargs)

    def reset_mode(self, *modes: int, **kwargs: Any) -> None:
        if kwargs.get("private"):
            alt = [m for m in modes if m in ALT_SCREEN_MODES]
            if alt:
                self._leave_alt_screen(restore_cursor=1049 in alt)
                modes = tuple(m for m in modes if m not in ALT_SCREEN_MODES)
                if not modes:
                    return
        super().reset_mode(*modes, **kwargs)

    def _enter_alt_screen(self, save_cursor: bool) -> None:
        if self.in_alt_screen:
            return
        if save_cursor:
            self.save_cursor()
        self._main = (self.buffer, self.cursor.x, self.cursor.y)
        self.buffer = _new_buffer(lambda: self.default_char)
        self.in_alt_screen = True
        self.dirty.update(range(self.lines))

    def _leave_alt_screen(self, restore_cursor: bool) -> None:
        if not self.in_alt_screen or self._main is None:
            return
        self.buffer, x, y = self._main
        self._main = None
        self.in_alt_screen = False
        self.cursor.x, self.cursor.y = min(x, self.columns - 1), min(y, self.lines - 1)
        if restore_cursor:
            self.restore_cursor()
        self.dirty.update(range(self.lines))

    # -- resize: xterm drops blank rows below the cursor first, then moves top rows to history

    def resize(self, lines: int | None = None, columns: int | None = None) -> None:
        lines = lines or self.lines
        columns = columns or self.columns
        if lines == self.lines and columns == self.columns:
            return
        if lines < self.lines:
            drop = self.lines - lines
            self.buffer, self.cursor.y = self._shrink(
                self.buffer, self.cursor.y, drop, keep=not self.in_alt_screen
            )
            if self._main is not None:
                main, x, y = self._main
                main, y = self._shrink(main, y, drop, keep=True)
                self._main = (main, x, y)
        elif lines > self.lines and not self.in_alt_screen and self.scrollback:
            # Growing: pull history back down, as xterm does, so the prompt stays at the bottom.
            pulled = min(lines - self.lines, len(self.scrollback))
            old = self.buffer
            self.buffer = _new_buffer(lambda: self.default_char)
            for y in range(self.lines):
                if y in old:
                    self.buffer[y + pulled] = old[y]
            for y in range(pulled - 1, -1, -1):
                self.buffer[y] = self.as_row(self.scrollback.pop()[1])
            self.cursor.y += pulled
        if columns < self.columns:
            for buffer in (self.buffer, self._main[0] if self._main else None):
                for row in (buffer or {}).values():
                    for x in range(columns, self.columns):
                        row.pop(x, None)
        self.lines, self.columns = lines, columns
        self.tabstops = set(range(8, columns, 8))
        self.margins = None
        self.cursor.x = min(self.cursor.x, columns - 1)
        self.cursor.y = min(self.cursor.y, lines - 1)
        self.dirty.update(range(lines))

    def _shrink(self, buffer: Any, cursor_y: int, drop: int, keep: bool) -> tuple[Any, int]:
        below = max(0, self.lines - 1 - cursor_y)
        from_top = max(0, drop - below)
        shrunk = _new_buffer(lambda: self.default_char)
        for y in range(from_top):
            if keep and y in buffer:
                self._push_scrollback(buffer[y])
        for y in range(from_top, self.lines - (drop - from_top)):
            if y in buffer:
                shrunk[y - from_top] = buffer[y]
        return shrunk, cursor_y - from_top


def _drop_private(name: str) -> Callable[..., None]:
    base = getattr(pyte.Screen, name)

    def method(self: VTScreen, *params: int, private: bool = False) -> None:
        if not private:
            base(self, *params)

    method.__name__ = name
    return method


# Every other CSI handler without a `private` keyword would raise TypeError on `CSI ? ...`.
for _name in pyte.Stream.csi.values():
    if _name not in VTScreen.__dict__ and _name not in (
        "erase_in_display",
        "erase_in_line",
        "report_device_attributes",
    ):
        setattr(VTScreen, _name, _drop_private(_name))


#: Anything but printable ASCII, CR and LF sends a chunk through pyte.
_NOT_PLAIN = re.compile(rb"[^\x20-\x7e\r\n]")

_COLOR_NAMES = {
    "brown": "yellow",
    "brightbrown": "bright_yellow",
    "bfightmagenta": "bright_magenta",  # sic: pyte 0.8.2's name for SGR 105
}


@lru_cache(maxsize=512)
def _color(name: str) -> Color | None:
    if name == "default":
        return None
    name = _COLOR_NAMES.get(name, name)
    if name.startswith("bright") and not name.startswith("bright_"):
        name = "bright_" + name[6:]
    try:
        if len(name) == 6 and all(c in "0123456789abcdefABCDEF" for c in name):
            return Color.parse("#" + name)
        return Color.parse(name)
    except Exception:
        return None


class _CellStyle(NamedTuple):
    fg: str
    bg: str
    bold: bool
    italics: bool
    underscore: bool
    strikethrough: bool
    reverse: bool


@lru_cache(maxsize=1024)
def _style(key: _CellStyle) -> Style:
    return Style(
        color=_color(key.fg),
        bgcolor=_color(key.bg),
        bold=key.bold or None,
        italic=key.italics or None,
        underline=key.underscore or None,
        strike=key.strikethrough or None,
        reverse=key.reverse or None,
    )


_CSI = "\x1b["
_TILDE = {
    "insert": 2,
    "delete": 3,
    "pageup": 5,
    "pagedown": 6,
    "f5": 15,
    "f6": 17,
    "f7": 18,
    "f8": 19,
    "f9": 20,
    "f10": 21,
    "f11": 23,
    "f12": 24,
}
_SS3_FUNCTION = {"f1": "P", "f2": "Q", "f3": "R", "f4": "S"}
_CURSOR = {"up": "A", "down": "B", "right": "C", "left": "D", "home": "H", "end": "F"}
_PLAIN = {
    "enter": "\r",
    "tab": "\t",
    "shift+tab": "\x1b[Z",
    "backspace": "\x7f",
    "escape": "\x1b",
    "space": " ",
    "ctrl+space": "\x00",
    "ctrl+@": "\x00",
}
_CTRL_SYMBOLS = {
    "left_square_bracket": "\x1b",
    "backslash": "\x1c",
    "right_square_bracket": "\x1d",
    "circumflex_accent": "\x1e",
    "underscore": "\x1f",
    "question_mark": "\x7f",
    "at": "\x00",
    "space": "\x00",
}
# xterm's modifier parameter: 1 + shift(1) + alt(2) + ctrl(4).
_MODIFIER_BITS = {"shift": 1, "alt": 2, "meta": 2, "ctrl": 4}


def encode_key(key: str, character: str | None, app_cursor: bool = False) -> str | None:
    """The bytes (as text) a VT220/xterm sends for a Textual key, or None if it sends none."""
    if key in _PLAIN:
        return _PLAIN[key]
    *mods, base = key.split("+") if key != "+" else ["+"]
    modifier = 1 + sum(_MODIFIER_BITS.get(m, 0) for m in mods)
    if base in _CURSOR:
        if modifier > 1:
            return f"{_CSI}1;{modifier}{_CURSOR[base]}"
        return ("\x1bO" if app_cursor else _CSI) + _CURSOR[base]
    if base in _SS3_FUNCTION:
        if modifier > 1:
            return f"{_CSI}1;{modifier}{_SS3_FUNCTION[base]}"
        return "\x1bO" + _SS3_FUNCTION[base]
    if base in _TILDE:
        suffix = f";{modifier}" if modifier > 1 else ""
        return f"{_CSI}{_TILDE[base]}{suffix}~"
    if mods == ["ctrl"]:
        if character and len(character) == 1 and ord(character) < 32:
            return character  # a real terminal already delivered the control byte
        if len(base) == 1 and base.isalpha():
            return chr(ord(base.lower()) & 0x1F)
        return _CTRL_SYMBOLS.get(base)
    if mods and mods[0] == "alt":
        rest = encode_key("+".join([*mods[1:], base]), character, app_cursor)
        return None if rest is None else "\x1b" + rest
    if character and (character.isprintable() or character in "\r\t\x1b\x7f"):
        return character
    if character and len(character) == 1 and ord(character) < 32:
        return character
    return None


class PtyTerminal(ScrollView, can_focus=True):
    """A VT100/xterm screen over pyte. Press ctrl+] to move focus out of it."""

    RELEASE_KEY = "ctrl+right_square_bracket"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            RELEASE_KEY,
            "release",
            "Leave terminal",
            key_display="ctrl+]",
            tooltip="Leave the shell; all other keys go to it",
        ),
    ]
    # Kept inline (tiny): the widget is reused outside the dashboard, e.g. in tests.
    DEFAULT_CSS = """
    PtyTerminal { overflow-y: scroll; overflow-x: hidden; scrollbar-size-vertical: 1; }
    """

    class Released(Message):
        """The user pressed the escape key: focus should move elsewhere."""

    def __init__(
        self,
        send: SendCallback | None = None,
        resize: ResizeCallback | None = None,
        *,
        cols: int = 80,
        rows: int = 24,
        history: int = 5000,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.send = send or (lambda data: None)
        self.on_resize_pty = resize
        self.vt = VTScreen(cols, rows, history, reply=self._reply)
        self._stream = pyte.ByteStream(self.vt)
        self._filter = PrivateCsiFilter()
        self._pending = bytearray()
        self._echo: bytes | None = None  # the last keys sent, until their echo comes back
        self._lines: LRUCache[tuple[str, int], Strip] = LRUCache(2000)
        self._follow = True
        self._last_paint = 0.0
        self._paint_timer: Timer | None = None
        self._cursor_row: int | None = None
        self._sent_size: tuple[int, int] | None = None
        self._seen_serial = 0
        self.virtual_size = Size(cols, rows)

    # -- input from the PTY

    def feed(self, data: bytes, paint: bool = True) -> None:
        """Take PTY output. Parsing and painting happen together, at most once a frame:
        bytes that arrive while a frame is due wait and are parsed in one go.
        (paint=False: only queue them, for `drain()` to parse; no app needed.)"""
        self._pending += data
        if not paint:
            return
        if self._echo is not None and self._echo in data:
            # What was just typed came back: show it now, not at the next frame of a flood.
            self._echo = None
            if self._paint_timer is not None:
                self._paint_timer.stop()
            self._frame()
            return
        if self._paint_timer is not None:
            return
        # Leading edge: when idle, at once, so a keystroke's echo shows immediately.
        wait = FRAME - (time.monotonic() - self._last_paint)
        if wait <= 0:
            self._frame()
        else:
            self._paint_timer = self.set_timer(wait, self._frame)

    def _frame(self) -> None:
        self._paint_timer = None
        self._process(PARSE_BUDGET)
        self._paint()
        if self._pending:  # pyte ran out of time: the rest next frame, input handled between
            self._paint_timer = self.set_timer(FRAME, self._frame)

    def _process(self, budget: float | None) -> None:
        """Parse what is pending; pyte's slow path stops after `budget` seconds (None: all)."""
        started = time.perf_counter()
        while self._pending:
            data = self._filter.filter(bytes(self._pending[:SLICE]))
            del self._pending[:SLICE]
            try:
                self._parse(data)
            except Exception as exc:  # guest bytes are untrusted: never let them kill the app
                self.log.error("terminal: parser error", exc)
            if budget is not None and time.perf_counter() - started > budget:
                break

    def _parse(self, data: bytes) -> None:
        """Runs of complete plain lines take the fast path; everything else goes to pyte,
        up to the next line end (an escape sequence may continue past the line)."""
        stream, vt = self._stream, self.vt
        pos, end = 0, len(data)
        while pos < end:
            odd = _NOT_PLAIN.search(data, pos)
            plain_end = end if odd is None else odd.start()
            last = data.rfind(b"\n", pos, plain_end)
            if last >= 0 and self._parser_idle() and vt.plain_ready():
                lines = data[pos:last].decode("ascii").split("\n")
                if all(
                    len(line) <= vt.columns + 1 and line.endswith("\r") and "\r" not in line[:-1]
                    for line in lines
                ):
                    vt.plain_lines([line[:-1] for line in lines])
                    pos = last + 1
                    continue
            # One line through pyte (to the cursor's reaching the bottom row, or past
            # wrapping, overstriking, a bare LF or an escape sequence).
            nl = data.find(b"\n", pos)
            stop = end if nl < 0 else nl + 1
            stream.feed(data[pos:stop])
            pos = stop

    def _parser_idle(self) -> bool:
        """pyte is between sequences and holds no partial UTF-8 character."""
        stream = self._stream
        return bool(stream._taking_plain_text) and not stream.utf8_decoder.getstate()[0]

    def drain(self) -> None:
        """Parse everything pending now (tests and tools read the VT right after a feed)."""
        if self._pending:
            self._process(None)

    def _reply(self, text: str) -> None:
        self.send(text.encode())

    def _paint(self) -> None:
        self._last_paint = time.monotonic()
        vt = self.vt
        dirty = set(vt.dirty)
        vt.dirty.clear()
        cursor_row = vt.cursor.y
        if self._cursor_row is not None:
            dirty.add(self._cursor_row)
        dirty.add(cursor_row)
        self._cursor_row = cursor_row
        for y in dirty:
            self._lines.discard(("b", y))
        history = 0 if vt.in_alt_screen else len(vt.scrollback)
        size = Size(vt.columns, history + vt.lines)
        if size != self.virtual_size or vt.scrollback_serial != self._seen_serial:
            # Rows moved (new history, or a resize): repaint everything visible.
            self._seen_serial = vt.scrollback_serial
            self.virtual_size = size
            if self._follow:
                # Deferred: the new virtual size must be laid out before "the end" is known.
                self.scroll_end(animate=False, x_axis=False)
            self.refresh()
            return
        top = history - round(self.scroll_y)
        for y in sorted(dirty):
            if 0 <= top + y < self.size.height:
                self.refresh_line(top + y)

    # -- output to the PTY

    def check_consume_key(self, key: str, character: str | None) -> bool:
        # Tab, ctrl+c, ctrl+p and friends belong to the program in the terminal.
        return key != self.RELEASE_KEY

    def action_release(self) -> None:
        self.post_message(self.Released())
        self.screen.focus_next()

    def on_key(self, event: events.Key) -> None:
        if event.key == self.RELEASE_KEY:
            return
        text = encode_key(event.key, event.character, app_cursor=DECCKM in self.vt.mode)
        if text is None:
            return
        event.stop()
        event.prevent_default()
        self._send_input(text.encode())

    def on_paste(self, event: events.Paste) -> None:
        event.stop()
        text = event.text.replace("\r\n", "\r").replace("\n", "\r")
        if BRACKETED_PASTE in self.vt.mode:
            text = f"\x1b[200~{text}\x1b[201~"
        self._send_input(text.encode())

    def _send_input(self, data: bytes) -> None:
        if not self._follow:
            self._follow = True
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        # A typed character comes back as itself; a control key's echo (if any) does not.
        self._echo = None if len(data) == 1 and data < b" " else data[-8:]
        self.send(data)

    # -- geometry

    def on_resize(self, event: events.Resize) -> None:
        self.fit()

    def fit(self) -> None:
        """Size the VT to the visible area (minus the scrollbar) and tell the PTY."""
        region = self.scrollable_content_region
        cols, rows = max(2, region.width), max(1, region.height)
        if (cols, rows) != (self.vt.columns, self.vt.lines):
            self.vt.resize(rows, cols)
            self._lines.clear()
            self._paint()
            self.refresh()
        if self.on_resize_pty is not None and self._sent_size != (cols, rows):
            self._sent_size = (cols, rows)
            self.on_resize_pty(cols, rows)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        # Scrolling up into history pauses following; back at the bottom resumes it.
        self._follow = round(new_value) >= self.max_scroll_y

    # -- painting

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._lines.clear()

    def on_focus(self) -> None:
        self._lines.discard(("b", self.vt.cursor.y))
        self.refresh()

    def on_blur(self) -> None:
        self._lines.discard(("b", self.vt.cursor.y))
        self.refresh()

    def render_line(self, y: int) -> Strip:
        vt = self.vt
        scroll_x, scroll_y = self.scroll_offset
        line = scroll_y + y
        history = 0 if vt.in_alt_screen else len(vt.scrollback)
        base = self.rich_style
        if line < history:
            serial, row = vt.scrollback[line]
            key = ("h", serial)
            cursor_x = None
        elif line - history < vt.lines:
            row_y = line - history
            row = vt.buffer[row_y]
            key = ("b", row_y)
            show = self.has_focus and not vt.cursor.hidden and row_y == vt.cursor.y
            cursor_x = vt.cursor.x if show else None
        else:
            return Strip.blank(self.size.width, base)
        strip = self._lines.get(key)
        if strip is None:
            if isinstance(row, str):
                strip = Strip([Segment(row[: vt.columns].ljust(vt.columns), base)], vt.columns)
            else:
                strip = Strip(self._segments(row, vt.columns, cursor_x, base), vt.columns)
            self._lines[key] = strip
        return strip.crop_extend(scroll_x, scroll_x + self.size.width, base)

    @staticmethod
    def _segments(row: Row, columns: int, cursor_x: int | None, base: Style) -> Iterable[Segment]:
        run: list[str] = []
        key: _CellStyle | None = None
        for x in range(columns):
            ch = row[x]
            cell = _CellStyle(
                ch.fg,
                ch.bg,
                ch.bold,
                ch.italics,
                ch.underscore,
                ch.strikethrough,
                ch.reverse != (x == cursor_x),
            )
            if cell != key:
                if run and key is not None:
                    yield Segment("".join(run), base + _style(key))
                run, key = [], cell
            run.append(ch.data)
        if run and key is not None:
            yield Segment("".join(run), base + _style(key))

    # -- for tests and tooling

    def screen_lines(self) -> list[str]:
        """The visible VT rows as text (no scrollback)."""
        self.drain()
        return [line.rstrip() for line in self.vt.display]

    def all_lines(self) -> list[str]:
        """Scrollback plus the visible rows, as text."""
        self.drain()
        history = [
            row.rstrip()
            if isinstance(row, str)
            else "".join(row[x].data for x in range(self.vt.columns)).rstrip()
            for _, row in self.vt.scrollback
        ]
        return [*history, *self.screen_lines()]
