"""The guest's own memory view, asked of its agent every few seconds, never on the sampler's clock.

Each question runs as its own task with a short timeout: a slow or frozen guest delays only its
own answer, and an answer older than ``max_age_s`` counts as no datum.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass

from engine.agent.client import AgentClient, AgentError

log = logging.getLogger(__name__)

DEFAULT_EVERY_S = 5.0


@dataclass(frozen=True, slots=True)
class _Answer:
    used_bytes: int
    at: float  # monotonic


class GuestMemory:
    def __init__(self, every_s: float = DEFAULT_EVERY_S, timeout_s: float = 2.0) -> None:
        # every_s <= 0 turns polling off: the datum is then always None.
        self.every_s = every_s
        self.timeout_s = timeout_s
        self.max_age_s = 3 * every_s
        self._answers: dict[str, _Answer] = {}
        self._asked: dict[str, float] = {}
        self._pending: dict[str, asyncio.Task[None]] = {}

    def poll(self, agents: dict[str, AgentClient]) -> None:
        """Ask every agent that is due and not still answering; returns at once."""
        if self.every_s <= 0:
            return
        now = time.monotonic()
        for sandbox_id, agent in agents.items():
            if sandbox_id in self._pending or agent.closed:
                continue
            if now - self._asked.get(sandbox_id, float("-inf")) < self.every_s:
                continue
            self._asked[sandbox_id] = now
            task = asyncio.create_task(self._ask(sandbox_id, agent))
            self._pending[sandbox_id] = task
            task.add_done_callback(functools.partial(self._done, sandbox_id))
        for sandbox_id in [k for k in self._asked if k not in agents]:
            self._forget(sandbox_id)

    async def _ask(self, sandbox_id: str, agent: AgentClient) -> None:
        try:
            info = await agent.sysinfo(timeout=self.timeout_s)
            total = int(info["mem_total_kib"])
            available = int(info["mem_available_kib"])
        except (AgentError, KeyError, TypeError, ValueError) as exc:
            log.debug("sysinfo of %s failed: %s", sandbox_id, exc)
            return
        if total > 0:
            self._answers[sandbox_id] = _Answer((total - available) * 1024, time.monotonic())

    def _done(self, sandbox_id: str, task: asyncio.Task[None]) -> None:
        if self._pending.get(sandbox_id) is task:
            del self._pending[sandbox_id]

    def used_bytes(self, sandbox_id: str) -> int | None:
        answer = self._answers.get(sandbox_id)
        if answer is None or time.monotonic() - answer.at > self.max_age_s:
            return None
        return answer.used_bytes

    def _forget(self, sandbox_id: str) -> None:
        self._asked.pop(sandbox_id, None)
        self._answers.pop(sandbox_id, None)
        task = self._pending.pop(sandbox_id, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._pending.clear()
