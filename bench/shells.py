"""Shells and services through the real API: keystroke echo, bulk output through a PTY (vs the
same through exec), echo while four shells stream, and service readiness overhead.

`seq` through a PTY is several times slower than through exec because its stdout is a
terminal there: line-buffered, one write(2) and one pass of the tty line discipline per line,
each costly under TCG. Every byte still arrives (checked line by line).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError
from typing import Any

from bench.harness import Series
from engine.client import Grove, GroveError, Probe

ENV = "debian:12"
SEQ_N = 200_000
PROMPT = b"# "


class ShellStream:
    """One client of the bidirectional Shell RPC, read on a thread (as the CLI does)."""

    def __init__(self, client: Grove, sandbox: str) -> None:
        self._stream = client.shell(sandbox, cols=120, rows=40)
        self.shell_id = self._stream.info.shell_id
        self._buf = bytearray()
        self._cond = threading.Condition()
        self.received = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for data in self._stream.output():
                with self._cond:
                    self._buf += data
                    self.received += len(data)
                    self._cond.notify_all()
        except (CancelledError, GroveError):
            pass  # detached: the read in flight is cancelled with the stream

    def send(self, data: bytes) -> None:
        self._stream.write(data)

    def mark(self) -> int:
        with self._cond:
            return len(self._buf)

    def wait_for(self, needle: bytes, start: int, timeout: float = 120.0) -> int:
        """Offset just past needle's first occurrence at or after start."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                at = self._buf.find(needle, start)
                if at >= 0:
                    return at + len(needle)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    tail = bytes(self._buf[-200:])
                    raise TimeoutError(f"{needle!r} not seen; tail {tail!r}")
                self._cond.wait(remaining)

    def output(self, start: int, end: int) -> bytes:
        with self._cond:
            return bytes(self._buf[start:end])

    def drop(self) -> None:
        """Forget what was received (bulk runs would otherwise pile up here)."""
        with self._cond:
            self._buf.clear()

    def detach(self) -> None:
        self._stream.detach()
        self._thread.join(timeout=10)


def _echo_latency(shell: ShellStream, series: Series, keys: int) -> None:
    for i in range(keys):
        key = b"abcdefghij"[i % 10 : i % 10 + 1]
        mark = shell.mark()
        sent = time.perf_counter()
        shell.send(key)
        shell.wait_for(key, mark, timeout=30)
        series.add((time.perf_counter() - sent) * 1000)
        if i % 20 == 19:
            shell.send(b"\x15")  # Ctrl+U: keep the line short
    shell.send(b"\x15")


def _seq_through_shell(shell: ShellStream) -> tuple[float, bool]:
    shell.drop()
    shell.send(b"\x15")
    mark = shell.mark()
    started = time.perf_counter()
    shell.send(f"seq 1 {SEQ_N}; echo SEQ''DONE\r".encode())
    end = shell.wait_for(b"SEQDONE", mark)
    elapsed = (time.perf_counter() - started) * 1000
    lines = shell.output(mark, end).split(b"\r\n")
    first = next(i for i, line in enumerate(lines) if line.endswith(b"1") and lines[i + 1] == b"2")
    numbers = lines[first : first + SEQ_N]
    numbers[0] = numbers[0][-1:]  # the line may start with terminal control bytes
    intact = numbers == [str(i).encode() for i in range(1, SEQ_N + 1)]
    shell.drop()
    return elapsed, intact


def _seq_through_exec(client: Grove, sandbox: str) -> tuple[float, bool]:
    started = time.perf_counter()
    out = client.exec(sandbox, ["seq", "1", str(SEQ_N)]).stdout
    elapsed = (time.perf_counter() - started) * 1000
    expected = "".join(f"{i}\n" for i in range(1, SEQ_N + 1)).encode()
    return elapsed, out == expected


def _exec_ms(client: Grove, sandbox: str, argv: list[str]) -> float:
    started = time.perf_counter()
    client.exec(sandbox, argv)
    return (time.perf_counter() - started) * 1000


def run(client: Grove, rounds: int) -> list[dict[str, Any]]:
    sandbox = client.create(ENV).id
    results: list[dict[str, Any]] = []
    try:
        echo = Series("shell: key press -> echo at the client", target_ms=15)
        shell = ShellStream(client, sandbox)
        shell.wait_for(PROMPT, 0)
        _echo_latency(shell, echo, max(rounds * 10, 50))

        seq_shell = Series(f"shell: seq 1 {SEQ_N} to the client", target_ms=3000)
        seq_exec = Series(f"exec: seq 1 {SEQ_N} to the client (no PTY)")
        lost = 0
        for _ in range(min(rounds, 3)):
            ms, intact = _seq_through_shell(shell)
            seq_shell.add(ms)
            lost += not intact
            ms, intact = _seq_through_exec(client, sandbox)
            seq_exec.add(ms)
            lost += not intact

        streams = [ShellStream(client, sandbox) for _ in range(4)]
        for stream in streams:
            stream.wait_for(PROMPT, 0)
            stream.send(b"while true; do seq 1 100000; done\r")
        time.sleep(2.0)
        busy = Series("shell: echo while 4 shells stream")
        before = sum(s.received for s in streams)
        began = time.perf_counter()
        _echo_latency(shell, busy, max(rounds * 5, 30))
        rate = (sum(s.received for s in streams) - before) / (time.perf_counter() - began)
        for stream in streams:
            stream.send(b"\x03")
            stream.detach()
            client.shell_close(sandbox, stream.shell_id)
        shell.detach()
        client.shell_close(sandbox, shell.shell_id)

        ready = Series("service start --ready-file, over command", target_ms=300)
        engine_ready = Series("service: spawn -> ready seen (engine-side)")
        for i in range(rounds):
            name = f"b{i}"
            marker = f"/tmp/ready-{i}"
            own = _exec_ms(client, sandbox, ["sh", "-c", f"touch {marker}.own"])
            argv = ["sh", "-c", f"touch {marker}; exec sleep 600"]
            started = time.perf_counter()
            info = client.service_start(sandbox, name, argv, probe=Probe("file", marker))
            total = (time.perf_counter() - started) * 1000
            ready.add(max(total - own, 0.0))
            if info.ready_ms is not None:
                engine_ready.add(info.ready_ms)
            client.service_stop(sandbox, name)

        results += [s.summary() for s in (echo, busy, seq_shell, seq_exec, ready, engine_ready)]
        results.append({"name": "shell/exec bulk output: bytes lost", "lost_runs": lost,
                        "meets_target": lost == 0})  # fmt: skip
        results.append({"name": "4 shells streaming: client throughput",
                        "bytes_per_s": round(rate)})  # fmt: skip
    finally:
        client.terminate(sandbox)
    return results
