"""A small single-threaded epoll reactor: fd callbacks, timers, signals and thread hand-off.

asyncio would do, but it costs startup time under TCG and hides the one thing we need to
control precisely: how the virtio port is polled while no host is connected (it reports
POLLHUP continuously then, so it is watched edge-triggered or not at all).
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
import os
import select
import signal
import time
import traceback
from collections.abc import Callable

from . import log

Callback = Callable[[], None]


class Timer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callback) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _Watch:
    """Registration of one fd; identity-checked so a stale event never reaches a reused fd."""

    __slots__ = ("edge", "fd", "on_read", "on_write")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.on_read: Callback | None = None
        self.on_write: Callback | None = None
        self.edge = False

    def mask(self) -> int:
        mask = 0
        if self.on_read is not None:
            mask |= select.EPOLLIN
        if self.on_write is not None:
            mask |= select.EPOLLOUT
        if self.edge:
            mask |= select.EPOLLET
        return mask


class Loop:
    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._watches: dict[int, _Watch] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._soon: collections.deque[Callback] = collections.deque()
        self._signal_handlers: dict[int, Callback] = {}
        self._running = False
        # Self-pipe: signal numbers (via set_wakeup_fd) and b"\0" from other threads.
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.add_reader(self._wake_r, self._on_wake)

    # -- fds ---------------------------------------------------------------------------

    def _update(self, fd: int, watch: _Watch, was_registered: bool) -> None:
        mask = watch.mask() & ~select.EPOLLET
        if mask == 0:
            del self._watches[fd]
            if was_registered:
                # Already closed: the kernel dropped it from the set.
                with contextlib.suppress(OSError):
                    self._epoll.unregister(fd)
            return
        if was_registered:
            self._epoll.modify(fd, watch.mask())
        else:
            self._epoll.register(fd, watch.mask())

    def _watch(self, fd: int) -> tuple[_Watch, bool]:
        watch = self._watches.get(fd)
        if watch is None:
            watch = _Watch(fd)
            self._watches[fd] = watch
            return watch, False
        return watch, True

    def add_reader(self, fd: int, callback: Callback, edge: bool = False) -> None:
        watch, registered = self._watch(fd)
        watch.on_read = callback
        watch.edge = edge
        self._update(fd, watch, registered)

    def remove_reader(self, fd: int) -> None:
        watch = self._watches.get(fd)
        if watch is not None and watch.on_read is not None:
            watch.on_read = None
            self._update(fd, watch, True)

    def add_writer(self, fd: int, callback: Callback) -> None:
        watch, registered = self._watch(fd)
        watch.on_write = callback
        self._update(fd, watch, registered)

    def remove_writer(self, fd: int) -> None:
        watch = self._watches.get(fd)
        if watch is not None and watch.on_write is not None:
            watch.on_write = None
            self._update(fd, watch, True)

    def forget(self, fd: int) -> None:
        """Drop every callback for fd; call before closing it."""
        watch = self._watches.pop(fd, None)
        if watch is not None:
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)

    # -- time --------------------------------------------------------------------------

    def call_later(self, delay: float, callback: Callback) -> Timer:
        timer = Timer(time.monotonic() + max(delay, 0.0), callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def call_soon(self, callback: Callback) -> None:
        self._soon.append(callback)

    def call_soon_threadsafe(self, callback: Callback) -> None:
        self._soon.append(callback)  # deque.append is atomic
        with contextlib.suppress(BlockingIOError):  # pipe full: the loop is awake anyway
            os.write(self._wake_w, b"\0")

    # -- signals -----------------------------------------------------------------------

    def add_signal_handler(self, signum: int, callback: Callback) -> None:
        """Run callback from the loop (not from the signal frame) when signum arrives."""
        self._signal_handlers[signum] = callback
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        # A Python-level handler must exist for the C handler to write the wakeup byte.
        signal.signal(signum, _noop_handler)

    def _on_wake(self) -> None:
        try:
            data = os.read(self._wake_r, 4096)
        except BlockingIOError:
            return
        for signum in set(data):
            handler = self._signal_handlers.get(signum)
            if handler is not None:
                self._run(handler)

    # -- running -----------------------------------------------------------------------

    def stop(self) -> None:
        self._running = False

    @staticmethod
    def _run(callback: Callback) -> None:
        try:
            callback()
        except Exception:
            # One broken session or request must not take the agent down.
            log.error("callback failed:\n" + traceback.format_exc().rstrip())

    def run(self) -> None:
        self._running = True
        while self._running:
            if self._soon:
                timeout = 0.0
            elif self._timers:
                timeout = max(self._timers[0][0] - time.monotonic(), 0.0)
            else:
                timeout = -1.0
            events = self._epoll.poll(timeout)
            for fd, mask in events:
                watch = self._watches.get(fd)
                if watch is None:
                    continue
                if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    if watch.on_read is not None:
                        self._run(watch.on_read)
                    elif watch.on_write is not None:
                        self._run(watch.on_write)  # errors surface through the write
                    # The callback may have dropped or replaced this registration.
                    if self._watches.get(fd) is not watch:
                        continue
                if mask & select.EPOLLOUT and watch.on_write is not None:
                    self._run(watch.on_write)
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, _, timer = heapq.heappop(self._timers)
                if not timer.cancelled:
                    self._run(timer.callback)
            for _ in range(len(self._soon)):
                self._run(self._soon.popleft())

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        self._epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


def _noop_handler(signum: int, frame: object) -> None:
    pass
