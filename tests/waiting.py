"""Wait for a condition with a deadline instead of sleeping and hoping it holds by then.

On a loaded machine any fixed sleep is either too short (the test flakes) or too long (the suite
crawls). ``wait_for`` polls ``probe()`` until ``ready(value)`` holds (by default: until the value is
truthy) and returns that value; on timeout it fails saying what it waited for and the last value
it saw. ``wait_for_async`` is the same in a coroutine (its probe may be a coroutine function).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

_SHOWN = 2000  # characters of the last value a timeout message shows


def _timed_out(what: str, timeout: float, last: object) -> AssertionError:
    shown = repr(last)
    if len(shown) > _SHOWN:
        shown = "..." + shown[-_SHOWN:]
    return AssertionError(f"timed out after {timeout:g} s waiting for {what}; last value: {shown}")


def wait_for(
    probe: Callable[[], T],
    timeout: float,
    what: str,
    ready: Callable[[T], object] = bool,
    interval: float = 0.2,
) -> T:
    """Call probe() until ready(its value) holds, and return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if ready(value):
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, value)
        time.sleep(interval)


@overload
async def wait_for_async(
    probe: Callable[[], Awaitable[T]],
    timeout: float,
    what: str,
    ready: Callable[[T], object] = ...,
    interval: float = ...,
) -> T: ...


@overload
async def wait_for_async(
    probe: Callable[[], T],
    timeout: float,
    what: str,
    ready: Callable[[T], object] = ...,
    interval: float = ...,
) -> T: ...


async def wait_for_async(
    probe: Callable[[], Any],
    timeout: float,
    what: str,
    ready: Callable[[Any], object] = bool,
    interval: float = 0.05,
) -> Any:
    """Call probe() (awaiting it if it is a coroutine) until ready(its value) holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if ready(value):
            return value
        if loop.time() >= deadline:
            raise _timed_out(what, timeout, value)
        await asyncio.sleep(interval)
