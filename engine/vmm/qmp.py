"""A small asyncio QMP client: one connection, commands matched to replies by id."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
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
        greeting = await asyncio.wait_for(reader.readline(), timeout)
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
                    with contextlib.suppress(asyncio.QueueFull):
                        self.events.put_nowait(message)
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

    async def execute(self, command: str, timeout: float = 30.0, **arguments: Any) -> Any:
        if self.closed.is_set():
            raise QmpError("qmp_closed", "QEMU monitor closed", "the VM process exited")
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        message: dict[str, Any] = {"execute": command, "id": ident}
        if arguments:
            message["arguments"] = arguments
        self._writer.write(json.dumps(message).encode() + b"\n")
        await self._writer.drain()
        reply = await asyncio.wait_for(future, timeout)
        if "error" in reply:
            raise QmpError(
                "qmp_command_failed",
                f"QEMU refused {command}: {reply['error'].get('desc', reply['error'])}",
                "see the sandbox's qemu.log",
            )
        return reply.get("return")

    async def wait_migration(self, timeout: float = 60.0, interval: float = 0.001) -> None:
        """Poll query-migrate until it completes; fail with QEMU's own error text."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            info = await self.execute("query-migrate")
            status = info.get("status", "")
            if status == "completed":
                return
            if status in ("failed", "cancelled"):
                raise QmpError(
                    "migration_failed",
                    f"snapshot transfer {status}: {info.get('error-desc', 'no detail')}",
                    "see the sandbox's qemu.log",
                )
            if loop.time() > deadline:
                raise QmpError("migration_timeout", "snapshot transfer timed out", "retry")
            await asyncio.sleep(interval)

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
        self.closed.set()
