"""The dashboard's numbers, each taken on the real program in a child process under a
pseudo-terminal (Textual's real Linux driver, real escape-sequence output), read by this
process the way a terminal emulator would read it:

- `grove ui` start -> first frame: from spawning the process to the main screen being on the
  pty (imports, app start, first paint; the engine is already running).
- UI CPU at 200 sandboxes with metering at 1 Hz: `python -m tui --fake --fake-sandboxes 200`
  (FakeEngine runs in the same process, so its own work is counted against the UI too), CPU
  time of the process over 20 s after it has settled.
- `seq 1 100000` in the embedded terminal widget against a local PTY (bash), from the Enter
  key written to the outer pty until the line printed after the burst comes out of it.
  Meanwhile a key every 10 ms, each a distinct non-ASCII letter. Its echo is timed inside
  the app, from the key event (made by Textual's input thread) to the first frame written
  after the echoed bytes were parsed (key -> widget -> bash's PTY -> kernel echo -> parser
  -> frame): at the burst's speed an echo scrolls off within the frame it lands in, so the
  outer screen may never show it. When idle, the echo is timed from the outside, from the
  write on the outer pty to the letter coming out of it.

    python -m bench --only tui
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import struct
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil
import pyte

from bench.harness import REPO, Series, engine_paths
from engine.client import Grove

COLS, ROWS = 140, 40
SANDBOXES = 200
CPU_WINDOW_S = 20.0
SETTLE_S = 5.0
CPU_BUDGET = 10.0  # % of one core
BURST = "seq 1 100000; echo BURST-$((6*7))"
BURST_DONE = b"BURST-42"  # printed after the burst; the command line itself shows $((6*7))
PROBE_EVERY_S = 0.01
PROBE_LOG = "GROVE_BENCH_PROBE_LOG"
#: One distinct character per key press, none of which Textual ever writes by itself.
PROBES = [
    chr(c) for c in (*range(0x3B1, 0x3CA), *range(0x430, 0x450), *range(0x391, 0x3AA)) if c != 0x3A2
]


class PtyChild:
    """A program on a COLS x ROWS pseudo-terminal; its output is read on a thread."""

    def __init__(self, argv: Sequence[str], env: dict[str, str]) -> None:
        self.started = time.perf_counter()
        pid, fd = pty.fork()
        if pid == 0:  # the child: never returns
            try:
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
                os.execvpe(argv[0], list(argv), env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.output = bytearray()
        self.lock = threading.Lock()
        self.watchers: list[Callable[[bytes, float], None]] = []
        self.closed = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.5)
                if not ready:
                    continue
                data = os.read(self.fd, 1 << 16)
            except OSError:
                data = b""
            now = time.perf_counter()
            with self.lock:
                if not data:
                    self.closed = True
                    return
                self.output += data
                for watch in list(self.watchers):
                    watch(data, now)

    def write(self, data: bytes) -> float:
        os.write(self.fd, data)
        return time.perf_counter()

    def tail(self) -> bytes:
        return bytes(self.output[-300:])

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                break
            for _ in range(60):
                if os.waitpid(self.pid, os.WNOHANG)[0]:
                    break
                time.sleep(0.05)
            else:
                continue
            break
        self._thread.join(timeout=5)
        os.close(self.fd)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEXTUAL")}
    env.update(
        TERM="xterm-256color", COLORTERM="truecolor", LANG="C.UTF-8", PYTHONPATH=str(REPO), **extra
    )
    return env


class Seen:
    """Watches a child's output for a condition; remembers when the chunk that met it came."""

    def __init__(self, child: PtyChild, test: Callable[[bytes, bytes], bool]) -> None:
        self.at: float | None = None
        self.event = threading.Event()
        self._test = test
        self._tail = b""
        child.watchers.append(self._watch)

    def _watch(self, data: bytes, now: float) -> None:
        window, self._tail = self._tail + data, data[-32:]
        if self.at is None and self._test(window, data):
            self.at = now
            self.event.set()

    def wait(self, timeout: float, what: str, child: PtyChild) -> float:
        if not self.event.wait(timeout) or self.at is None:
            raise TimeoutError(f"{what} not seen; tail {child.tail()!r}")
        return self.at


def screen_shows(*needles: str) -> Callable[[bytes, bytes], bool]:
    """Parses the output as a terminal would and looks for text on its screen."""
    screen = pyte.Screen(COLS, ROWS)
    stream = pyte.ByteStream(screen)

    def test(window: bytes, data: bytes) -> bool:
        stream.feed(data)
        text = "\n".join(screen.display)
        return all(n in text for n in needles)

    return test


def contains(marker: bytes) -> Callable[[bytes, bytes], bool]:
    return lambda window, data: marker in window


# -- start to first frame


def first_frame(home: Path, rounds: int) -> Series:
    series = Series("tui: grove ui start -> first frame", target_ms=1500)
    argv = [sys.executable, "-m", "engine.cli.main", "ui"]
    for _ in range(rounds):
        child = PtyChild(argv, _env(GROVE_HOME=str(home)))
        # The main screen: the tree's and the table's titles and the footer's palette key.
        frame = Seen(child, screen_shows("lineage", "metering", "palette"))
        try:
            series.add((frame.wait(30, "the first frame", child) - child.started) * 1000)
        finally:
            child.stop()
    return series


# -- CPU with many sandboxes


def measure_ui_cpu(
    argv: Sequence[str], env: dict[str, str], shows: Sequence[str], settle_s: float
) -> tuple[float, float, float]:
    """CPU of the dashboard in `argv` over CPU_WINDOW_S once the screen shows `shows` and
    `settle_s` more have passed: (% of a core, window in s, terminal bytes written per s)."""
    child = PtyChild(argv, env)
    loaded = Seen(child, screen_shows(*shows))
    try:
        loaded.wait(90, "the dashboard with its sandboxes", child)
        time.sleep(settle_s)  # the first load: every row, every event replayed
        proc = psutil.Process(child.pid)
        before, out_before = proc.cpu_times(), len(child.output)
        began = time.perf_counter()
        time.sleep(CPU_WINDOW_S)
        after, elapsed = proc.cpu_times(), time.perf_counter() - began
        used = (after.user - before.user) + (after.system - before.system)
        written = (len(child.output) - out_before) / elapsed
    finally:
        child.stop()
    return used / elapsed * 100, elapsed, written


def cpu_with_sandboxes() -> dict[str, Any]:
    argv = [sys.executable, "-m", "tui", "--fake", "--fake-sandboxes", str(SANDBOXES)]
    percent, elapsed, written = measure_ui_cpu(argv, _env(), ("box-000", "palette"), SETTLE_S)
    return {
        "name": f"tui: UI CPU, {SANDBOXES} sandboxes, metering 1 Hz (% of a core)",
        "n": 1,
        "value": round(percent, 2),
        "window_s": round(elapsed, 1),
        "terminal_bytes_per_s": round(written),
        "target": CPU_BUDGET,
        "meets_target": percent <= CPU_BUDGET,
    }


# -- the terminal widget under a burst


class Probes:
    """Distinct characters typed into the app; each is timed to its first echo on screen."""

    def __init__(self, child: PtyChild, series: Series, alphabet: Sequence[str]) -> None:
        self.child = child
        self.series = series
        self.pending: dict[bytes, float] = {}
        self.unused = list(alphabet)
        self.lock = threading.Lock()
        self._tail = b""
        child.watchers.append(self._watch)

    def _watch(self, data: bytes, now: float) -> None:
        window, self._tail = self._tail + data, data[-8:]  # a letter split across reads
        with self.lock:
            for marker in [m for m in self.pending if m in window]:
                self.series.add((now - self.pending.pop(marker)) * 1000)

    def press(self) -> bool:
        if not self.unused:
            return False
        marker = self.unused.pop(0).encode()
        with self.lock:
            self.pending[marker] = time.perf_counter()
        self.child.write(marker)
        return True

    def settle(self, timeout: float = 5.0) -> int:
        """Wait for outstanding echoes; returns how many never came."""
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.02)
        with self.lock:
            lost, self.pending = len(self.pending), {}
        return lost


def terminal_burst(rounds: int) -> list[Series]:
    burst = Series("tui: seq 1 100000 burst in the terminal widget", target_ms=3000)
    busy = Series("tui: key -> echo framed, during the burst", target_ms=30)
    idle = Series("tui: key -> echo on screen, idle")
    lost = 0
    with tempfile.TemporaryDirectory(prefix="grove-bench-") as tmp:
        for n in range(max(1, min(rounds, 5))):
            log = Path(tmp) / f"probes-{n}.jsonl"
            argv = [sys.executable, "-m", "bench.tui", "--terminal-app"]
            child = PtyChild(argv, _env(**{PROBE_LOG: str(log)}))
            try:
                lost += _one_burst(child, burst, idle)
            finally:
                child.stop()
            records = (
                [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
            )
            for record in records:
                if record.get("written") is not None:
                    busy.add((record["written"] - record["key"]) * 1000)
                else:
                    lost += 1
    if lost:
        print(f"tui bench: {lost} key echoes never showed", file=sys.stderr)
    return [burst, busy, idle]


def _one_burst(child: PtyChild, burst: Series, idle: Series) -> int:
    """One app: idle echoes, then the burst with keys typed; returns the idle echoes lost."""
    Seen(child, contains(b"$ ")).wait(30, "the prompt", child)
    time.sleep(0.5)
    probes = Probes(child, idle, PROBES[-10:])
    for _ in range(10):
        probes.press()
        time.sleep(0.1)
    lost = probes.settle()
    child.write(b"\x15")  # ^U: the probes leave the command line empty again
    time.sleep(0.3)
    typed = Seen(child, contains(b"$((6*7))"))
    child.write(BURST.encode())
    typed.wait(10, "the typed command", child)
    time.sleep(0.3)
    done = Seen(child, contains(BURST_DONE))
    began = child.write(b"\r")
    for letter in PROBES[:-10]:  # timed inside the app
        if done.event.wait(PROBE_EVERY_S):
            break
        child.write(letter.encode())
    burst.add((done.wait(60, "the end of the burst", child) - began) * 1000)
    time.sleep(0.5)  # the last echoes reach the screen (and the log)
    return lost


def terminal_app() -> None:
    """The child of terminal_burst: one full-screen PtyTerminal on a local bash."""
    import asyncio

    from textual import events
    from textual.app import App, ComposeResult

    from tui.local_shell import LocalShell
    from tui.widgets.terminal import PtyTerminal

    log_path = os.environ.get(PROBE_LOG)
    probes: dict[str, dict[str, float | None]] = {}
    letters = frozenset(PROBES)

    def emit(letter: str) -> None:
        if log_path:
            with open(log_path, "a") as log:
                log.write(json.dumps({"letter": letter, **probes[letter]}) + "\n")

    class ProbedTerminal(PtyTerminal):
        """Notes when each probe letter's key came, when its echo was parsed."""

        def on_key(self, event: events.Key) -> None:
            if event.character in letters:
                probes[event.character] = {"key": event.time, "parsed": None, "written": None}
            super().on_key(event)

        def _parse(self, data: bytes) -> None:
            super()._parse(data)
            now = time.monotonic()
            for letter, record in probes.items():
                if record["parsed"] is None and letter.encode() in data:
                    record["parsed"] = now

    class TerminalBench(App[None]):
        CSS = "PtyTerminal { height: 1fr; }"

        def __init__(self) -> None:
            super().__init__()
            self.shell = LocalShell(env={"PS1": "$ ", "HISTFILE": "/dev/null"})
            self.outbox: asyncio.Queue[bytes | tuple[int, int]] = asyncio.Queue()

        def compose(self) -> ComposeResult:
            yield ProbedTerminal(
                send=self.outbox.put_nowait, resize=lambda c, r: self.outbox.put_nowait((c, r))
            )

        async def on_mount(self) -> None:
            driver = self._driver
            assert driver is not None
            write = driver.write

            def timed_write(data: str) -> None:
                # The first frame out after an echo was parsed is the one that shows it.
                now = time.monotonic()
                for letter, record in probes.items():
                    if record["parsed"] is not None and record["written"] is None:
                        record["written"] = now
                        emit(letter)
                write(data)

            driver.write = timed_write  # type: ignore[method-assign]
            await self.shell.start()
            self.run_worker(self._pump())
            self.run_worker(self._writer())
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

    TerminalBench().run()


def run(client: Grove, rounds: int) -> list[dict[str, Any]]:
    results = [first_frame(engine_paths(client).home, max(3, min(rounds, 10))).summary()]
    results.append(cpu_with_sandboxes())
    results += [s.summary() for s in terminal_burst(rounds)]
    return results


def print_summary(results: list[dict[str, Any]]) -> None:
    head = f"{'dashboard measure':56} {'n':>4} {'p50':>10} {'p90':>10} {'target':>8}  ok"
    print(head, file=sys.stderr)
    print("-" * len(head), file=sys.stderr)
    for r in results:
        ok = {True: "yes", False: "NO", None: "-"}[r.get("meets_target")]
        if "value" in r:
            p50, p90, target = f"{r['value']:.1f}%", "-", f"{r['target']:g}%"
        else:
            p50 = "-" if r.get("p50_ms") is None else f"{r['p50_ms']:.1f} ms"
            p90 = "-" if r.get("p90_ms") is None else f"{r['p90_ms']:.1f} ms"
            target = "-" if r.get("target_ms") is None else f"{r['target_ms']:g} ms"
        print(f"{r['name']:56} {r.get('n', 1):>4} {p50:>10} {p90:>10} {target:>8}  {ok}",
              file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:] != ["--terminal-app"]:
        sys.exit("usage: python -m bench --only tui")
    terminal_app()
