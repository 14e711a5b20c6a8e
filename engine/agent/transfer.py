"""Bulk transfers over one agent channel: an ``Upload`` sends DATA under the agent's credit and
ends with a ``commit`` (or ``abort``); a ``Download`` yields DATA as the consumer takes it, and
grants credit back only then, so a slow reader slows the guest instead of filling the engine.

Both are owned by whoever opened them: ``close()`` (always called, also on cancellation) sends
``abort`` unless the transfer finished, so the guest removes its staging files at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from engine.agent.client import AgentClient, AgentError, _Channel
from guest.protocol import (
    CTRL,
    DATA,
    DATA_CHUNK,
    INITIAL_WINDOW,
    STDIN,
    WINDOW,
    Frame,
    encode_ctrl,
    encode_data,
)

#: Credit goes back in batches of this many consumed bytes.
GRANT_THRESHOLD = INITIAL_WINDOW // 4


def event_error(event: dict[str, Any]) -> AgentError:
    return AgentError(str(event.get("code") or "error"), str(event.get("error") or ""))


class _Transfer(_Channel):
    """One channel: the open reply, then DATA/WINDOW, events, and one final event."""

    #: Events after which the agent has ended the session.
    FINAL = frozenset({"done", "error", "aborted", "eof"})

    def __init__(self, client: AgentClient) -> None:
        self._client = client
        self.channel = 0
        loop = asyncio.get_running_loop()
        self.reply: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._events: collections.deque[dict[str, Any]] = collections.deque()
        self._error: AgentError | None = None
        self._wakeup = asyncio.Event()
        self.final: dict[str, Any] | None = None

    # frames from the agent (called by AgentClient's reader)

    def on_frame(self, frame: Frame) -> None:
        if frame.kind == CTRL:
            message = self.control(frame)
            if message is None:
                return
            if not self.reply.done():
                self.reply.set_result(message)
                if not message.get("ok"):
                    self._client._forget(self.channel)
                return
            if message.get("event") in self.FINAL:
                self.final = message
                self._client._forget(self.channel)
            self._events.append(message)
        elif frame.kind == DATA:
            self.on_data(frame.data)
        elif frame.kind == WINDOW and len(frame.payload) == 4:
            self.on_credit(frame.credit)
        self._wakeup.set()

    def on_data(self, data: bytes) -> None:
        """DATA from the agent."""

    def on_credit(self, credit: int) -> None:
        """WINDOW from the agent."""

    def fail(self, error: AgentError) -> None:
        self._error = error
        if not self.reply.done():
            self.reply.set_exception(error)
            self.reply.exception()  # retrieved: the opener re-raises it from open()
        self._wakeup.set()

    # helpers

    async def open(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.channel = self._client._allocate(self)
        try:
            self._client._write(encode_ctrl(self.channel, message))
            reply = await asyncio.wait_for(asyncio.shield(self.reply), timeout)
        except TimeoutError:
            self._client._forget(self.channel)
            raise AgentError("timeout", f"{message.get('op')} got no reply") from None
        except BaseException:
            self._client._forget(self.channel)
            raise
        if not reply.get("ok"):
            raise event_error(reply)
        return reply

    async def _wait(self) -> None:
        self._wakeup.clear()
        await self._wakeup.wait()

    async def next_event(self) -> dict[str, Any]:
        while not self._events:
            if self._error is not None:
                raise self._error
            await self._wait()
        return self._events.popleft()

    async def final_event(self) -> dict[str, Any]:
        """Skip to the final event; raise AgentError when it is an error."""
        while True:
            event = await self.next_event()
            if event.get("event") == "error":
                raise event_error(event)
            if event.get("event") in self.FINAL:
                return event

    async def close(self) -> None:
        """Abort unless finished; safe to call more than once and from a finally block."""
        if self.final is not None or self._error is not None or self.channel == 0:
            return
        self.final = {"event": "aborted"}
        self._client._forget(self.channel)
        with contextlib.suppress(AgentError, OSError, ConnectionError):
            self._client._write(encode_ctrl(self.channel, {"op": "abort"}))


class Upload(_Transfer):
    """Engine -> guest bytes; ``commit(sha256=...)`` asks the guest to check and keep them."""

    def __init__(self, client: AgentClient) -> None:
        super().__init__(client)
        self._credit = INITIAL_WINDOW
        self.sent = 0

    def on_credit(self, credit: int) -> None:
        self._credit += credit

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            while self._credit <= 0:
                if self._error is not None:
                    raise self._error
                if self.final is not None:
                    raise event_error(self.final)
                await self._wait()
            if self.final is not None:
                # The guest ended the session early (disk full, a bad member): say why.
                raise event_error(self.final)
            size = min(len(view), self._credit, DATA_CHUNK)
            self._client._write(encode_data(self.channel, STDIN, bytes(view[:size])))
            self._credit -= size
            self.sent += size
            view = view[size:]
            await self._client._drain()

    async def commit(self, **fields: Any) -> dict[str, Any]:
        if self.final is None:
            self._client._write(encode_ctrl(self.channel, {"op": "commit", **fields}))
        return await self.final_event()


class Download(_Transfer):
    """Guest -> engine bytes, as an async iterator; events (hashes) are kept for the caller."""

    def __init__(self, client: AgentClient) -> None:
        super().__init__(client)
        self._chunks: collections.deque[bytes] = collections.deque()
        self._to_grant = 0

    def on_data(self, data: bytes) -> None:
        self._chunks.append(data)

    def _consumed(self, size: int) -> None:
        self._to_grant += size
        if self._to_grant >= GRANT_THRESHOLD and self.final is None:
            self._client._grant(self.channel, self._to_grant)
            self._to_grant = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        """The bytes as they arrive; ends at the final event (raising if it is an error)."""
        while True:
            if self._chunks:
                data = self._chunks.popleft()
                self._consumed(len(data))
                yield data
                continue
            if self.final is not None:
                if self.final.get("event") == "error":
                    raise event_error(self.final)
                return
            if self._error is not None:
                raise self._error
            await self._wait()

    def events(self) -> list[dict[str, Any]]:
        """Every non-final event received so far (after chunks() ended: all of them)."""
        return [e for e in self._events if e.get("event") not in self.FINAL]
