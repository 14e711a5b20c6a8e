"""A small asyncio QMP client: one connection, commands matched to replies by id."""

from __future__ import annotations

import array
import asyncio
import contextlib
import itertools
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from engine.errors import GroveError


class QmpError(GroveError):
    pass


class Qmp:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=256)
        self._reader_task: asyncio.Task[None] | None = None
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], asyncio.Future[Any]]] = []
        self.closed = asyncio.Event()

    @classmethod
    async def connect(cls, path: Path, timeout: float = 10.0) -> Qmp:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 22)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if loop.time() > deadline:
                    raise QmpError(
                        "qmp_unreachable",
                        f"QEMU monitor socket {path} did not come up",
                        "check the sandbox's qemu.log",
                    ) from None
                await asyncio.sleep(0.002)
        qmp = cls(reader, writer)
        try:
            greeting = await asyncio.wait_for(reader.readline(), timeout)
        except (OSError, TimeoutError) as exc:
            writer.close()
            raise QmpError(
                "qmp_unreachable", f"QEMU monitor {path} did not greet: {exc}", "check qemu.log"
            ) from None
        if b"QMP" not in greeting:
            raise QmpError("qmp_protocol", "QEMU monitor sent no greeting", "check qemu.log")
        qmp._reader_task = asyncio.create_task(qmp._read_loop())
        await qmp.execute("qmp_capabilities")
        return qmp

    async def _read_loop(self) -> None:
        try:
            while line := await self._reader.readline():
                message = json.loads(line)
                if "event" in message:
                    self._dispatch(message)
                    continue
                future = self._pending.pop(message.get("id", -1), None)
                if future is not None and not future.done():
                    future.set_result(message)
        except (ConnectionError, json.JSONDecodeError):
            pass
        finally:
            self.closed.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(
                        QmpError("qmp_closed", "QEMU monitor closed", "the VM process exited")
                    )
            self._pending.clear()
            for _, waiter in self._waiters:
                if not waiter.done():
                    waiter.set_exception(
                        QmpError("qmp_closed", "QEMU monitor closed", "the VM process exited")
                    )
            self._waiters.clear()

    def _dispatch(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.events.put_nowait(message)
        for entry in list(self._waiters):
            matches, future = entry
            if future.done():
                self._waiters.remove(entry)
            elif matches(message):
                self._waiters.remove(entry)
                future.set_result(message)

    def subscribe(self, matches: Callable[[dict[str, Any]], bool]) -> asyncio.Future[Any]:
        """A future for the next event that matches. Subscribe before the command that causes
        the event, so it cannot slip past; cancel the future if it is no longer wanted."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.closed.is_set():
            future.set_exception(
                QmpError("qmp_closed", "QEMU monitor closed", "the VM process exited")
            )
        else:
            self._waiters.append((matches, future))
        return future

    async def execute(
        self, command: str, timeout: float = 30.0, fd: int | None = None, **arguments: Any
    ) -> Any:
        """Run a QMP command; fd: a file descriptor handed to QEMU with it (for getfd)."""
        if self.closed.is_set():
            raise QmpError("qmp_closed", "QEMU monitor closed", "the VM process exited")
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        message: dict[str, Any] = {"execute": command, "id": ident}
        if arguments:
            message["arguments"] = arguments
        data = json.dumps(message).encode() + b"\n"
        if fd is None:
            self._writer.write(data)
            await self._writer.drain()
        else:
            await self._send_with_fd(data, fd)
        reply = await asyncio.wait_for(future, timeout)
        if "error" in reply:
            raise QmpError(
                "qmp_command_failed",
                f"QEMU refused {command}: {reply['error'].get('desc', reply['error'])}",
                "see the sandbox's qemu.log",
            )
        return reply.get("return")

    async def _send_with_fd(self, data: bytes, fd: int) -> None:
        # SCM_RIGHTS needs sendmsg on the socket itself; the stream's buffer is drained first
        # so the message keeps its place among the others.
        await self._writer.drain()
        transport_socket = self._writer.get_extra_info("socket")
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())]
        # A duplicate shares the connection (and its non-blocking mode, which stays as is).
        with socket.socket(fileno=os.dup(transport_socket.fileno())) as sock:
            for _ in range(1000):
                try:
                    sent = sock.sendmsg([data], rights)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.001)
            else:
                raise QmpError("qmp_busy", "QEMU's monitor did not take a command", "retry")
            if sent < len(data):  # the fd went with the first byte; the rest as usual
                self._writer.write(data[sent:])
                await self._writer.drain()

    async def wait_migration(self, timeout: float = 60.0) -> None:
        """Wait for this VM's migration to end: completed returns, failed or cancelled raises
        with QEMU's own error text."""

        async def ended() -> bool:
            info = await self.execute("query-migrate")
            status = info.get("status", "")
            if status in ("failed", "cancelled"):
                raise QmpError(
                    "migration_failed",
                    f"snapshot transfer {status}: {info.get('error-desc', 'no detail')}",
                    "see the sandbox's qemu.log",
                )
            return bool(status == "completed")

        if not await self.poll(ended, timeout, _migration_event):
            raise QmpError("migration_timeout", "snapshot transfer timed out", "retry")

    async def poll(
        self,
        done: Callable[[], Awaitable[bool]],
        timeout: float,
        wake: Callable[[dict[str, Any]], bool],
        stop: asyncio.Future[Any] | None = None,
    ) -> bool:
        """Ask done() until it is true (True) or timeout passes (False), or stop resolves.

        QEMU 7.2 sends some events (MIGRATION from its migration thread, RESUME from a bottom
        half) only when its main loop next wakes, so an event alone can come late; asking is
        what wakes it. Asking every millisecond for a minute, though, keeps QEMU's monitor
        busy the whole time. So: ask at once, then at intervals growing from 1 ms to 50 ms,
        and ask again as soon as a matching event arrives.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        interval = 0.001
        while True:
            event = self.subscribe(wake)
            try:
                if await done():
                    return True
                left = deadline - loop.time()
                if left <= 0:
                    return False
                waits: set[asyncio.Future[Any]] = {event}
                if stop is not None:
                    waits.add(stop)
                await asyncio.wait(waits, timeout=min(left, interval))
                if stop is not None and stop.done():
                    return False
                interval = min(interval * 1.5, 0.05)
            finally:
                event.cancel()

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
        self.closed.set()


def migration_caps(**capabilities: bool) -> list[dict[str, Any]]:
    """Migration capabilities, always with `events` on so waits need not poll."""
    return [
        {"capability": name.replace("_", "-"), "state": state}
        for name, state in {"events": True, **capabilities}.items()
    ]


def _migration_event(message: dict[str, Any]) -> bool:
    return message.get("event") in ("MIGRATION", "RESUME", "STOP")
