"""Grove: the blocking twin of AsyncGrove, for scripts and the CLI.

It runs one AsyncGrove on a private event loop in a daemon thread and waits for each call, so
both clients share every conversion and error path; streams come back as plain iterators.
Each method below is AsyncGrove's own, wrapped: its signature and types carry over as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from engine.api.aio_client import AsyncGrove, ExecStream, ShellStream
from engine.api.files_client import Progress
from engine.client import models as m
from engine.client.hosts import SshTarget
from engine.client.ssh import StateCallback
from engine.config import Paths

P = ParamSpec("P")
R = TypeVar("R")


class _Loop:
    """An event loop of its own in a daemon thread; callers block on its futures."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="grove-client",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, R]) -> R:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl+C here: end the call in the engine too
            raise

    def iterate(self, stream: AsyncIterator[R]) -> Iterator[R]:
        current: list[asyncio.Task[Any] | None] = [None]

        async def step() -> tuple[bool, R | None]:
            current[0] = asyncio.current_task()
            try:
                return True, await anext(stream)
            except StopAsyncIteration:
                return False, None

        async def finish() -> None:
            # A step cut short (Ctrl+C) must end before the generator can be closed.
            task = current[0]
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            close = getattr(stream, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

        try:
            while True:
                more, item = self.run(step())
                if not more:
                    return
                yield item  # type: ignore[misc]
        finally:
            if not self.loop.is_closed():
                self.run(finish())

    def close(self) -> None:
        # As asyncio.run ends: what is still pending (gRPC's own call tasks, a stream cut
        # short) is cancelled and awaited, so nothing is destroyed while pending at exit.
        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(drain(), self.loop).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


async def _await(value: Awaitable[R]) -> R:
    return await value


def _blocking(
    method: Callable[Concatenate[Any, P], Awaitable[R]],
) -> Callable[Concatenate[Any, P], R]:
    def call(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        loop: _Loop = self._loop
        return loop.run(_await(method(self._aio, *args, **kwargs)))

    call.__name__ = method.__name__
    call.__doc__ = method.__doc__
    return call


def _iterating(
    method: Callable[Concatenate[Any, P], AsyncIterator[R]],
) -> Callable[Concatenate[Any, P], Iterator[R]]:
    def call(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[R]:
        loop: _Loop = self._loop
        return loop.iterate(method(self._aio, *args, **kwargs))

    call.__name__ = method.__name__
    call.__doc__ = method.__doc__
    return call


S = TypeVar("S")
W = TypeVar("W")


def _opening(
    method: Callable[Concatenate[Any, P], Awaitable[S]], wrap: Callable[[_Loop, S], W]
) -> Callable[Concatenate[Any, P], W]:
    """A call that returns a live stream object: wrapped in its blocking twin."""

    def call(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> W:
        loop: _Loop = self._loop
        return wrap(loop, loop.run(_await(method(self._aio, *args, **kwargs))))

    call.__name__ = method.__name__
    call.__doc__ = method.__doc__
    return call


class SyncExecStream:
    """A running command (blocking): iterate output(); `exit` is set once it ends."""

    def __init__(self, loop: _Loop, stream: ExecStream) -> None:
        self._loop = loop
        self._aio = stream

    @property
    def pid(self) -> int | None:
        return self._aio.pid

    @property
    def exit(self) -> m.ExecExit | None:
        return self._aio.exit

    output = _iterating(ExecStream.output)
    result = _blocking(ExecStream.result)
    write = _blocking(ExecStream.write)
    close_stdin = _blocking(ExecStream.close_stdin)
    signal = _blocking(ExecStream.signal)

    def cancel(self) -> None:
        self._loop.loop.call_soon_threadsafe(self._aio.cancel)


class SyncShellStream:
    """An attached guest PTY (blocking). detach() leaves the shell running in the engine."""

    def __init__(self, loop: _Loop, stream: ShellStream) -> None:
        self._loop = loop
        self._aio = stream

    @property
    def info(self) -> m.Shell:
        return self._aio.info

    @property
    def exit(self) -> m.ShellExit | None:
        return self._aio.exit

    events = _iterating(ShellStream.events)
    output = _iterating(ShellStream.output)
    write = _blocking(ShellStream.write)
    resize = _blocking(ShellStream.resize)
    signal = _blocking(ShellStream.signal)
    detach = _blocking(ShellStream.detach)


class Grove:
    """A blocking client of one engine. `Grove.connect()` reaches the local one (GROVE_HOME),
    starting it on demand; use it as a context manager or call close()."""

    def __init__(self, loop: _Loop, client: AsyncGrove) -> None:
        self._loop = loop
        self._aio = client

    @classmethod
    def connect(
        cls,
        paths: Paths | None = None,
        autostart: bool = True,
        check_version: bool = True,
        host: str | SshTarget | None = None,
        on_state: StateCallback | None = None,
    ) -> Grove:
        """As AsyncGrove.connect: a remote host, else the local engine."""
        loop = _Loop()
        try:
            client = loop.run(AsyncGrove.connect(paths, autostart, check_version, host, on_state))
        except BaseException:
            loop.close()
            raise
        return cls(loop, client)

    @property
    def info(self) -> m.EngineInfo | None:
        return self._aio.info

    @property
    def description(self) -> str:
        return self._aio.description

    @property
    def remote(self) -> bool:
        return self._aio.tunnel is not None

    @property
    def transport(self) -> str:
        """'unix' for the local engine; 'forward' or 'dial-stdio' through SSH."""
        tunnel = self._aio.tunnel
        return tunnel.mode if tunnel is not None else "unix"

    def close(self) -> None:
        if self._loop.loop.is_closed():
            return
        self._loop.run(self._aio.close())
        self._loop.close()

    def __enter__(self) -> Grove:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    status = _blocking(AsyncGrove.status)
    shutdown = _blocking(AsyncGrove.shutdown)
    environments = _blocking(AsyncGrove.environments)
    pull = _iterating(AsyncGrove.pull)
    environment = _blocking(AsyncGrove.environment)
    prune = _blocking(AsyncGrove.prune)

    create = _blocking(AsyncGrove.create)
    sandboxes = _blocking(AsyncGrove.sandboxes)
    get = _blocking(AsyncGrove.get)
    stop = _blocking(AsyncGrove.stop)
    start = _blocking(AsyncGrove.start)
    terminate = _blocking(AsyncGrove.terminate)
    set_ttl = _blocking(AsyncGrove.set_ttl)
    ping = _blocking(AsyncGrove.ping)
    network = _blocking(AsyncGrove.network)
    exec = _blocking(AsyncGrove.exec)
    events = _iterating(AsyncGrove.events)
    watch_inventory = _iterating(AsyncGrove.watch_inventory)

    exec_stream = _opening(AsyncGrove.exec_stream, SyncExecStream)

    fork = _blocking(AsyncGrove.fork)
    snapshot = _blocking(AsyncGrove.snapshot)
    snapshots = _blocking(AsyncGrove.snapshots)
    delete_snapshot = _blocking(AsyncGrove.delete_snapshot)
    reset = _blocking(AsyncGrove.reset)
    lineage = _blocking(AsyncGrove.lineage)
    diff = _blocking(AsyncGrove.diff)

    top = _blocking(AsyncGrove.top)
    watch_metering = _iterating(AsyncGrove.watch_metering)
    metering_history = _blocking(AsyncGrove.metering_history)

    shell = _opening(AsyncGrove.shell, SyncShellStream)

    shell_open = _blocking(AsyncGrove.shell_open)
    shell_read = _blocking(AsyncGrove.shell_read)
    shell_write = _blocking(AsyncGrove.shell_write)
    shell_signal = _blocking(AsyncGrove.shell_signal)
    shell_close = _blocking(AsyncGrove.shell_close)
    shells = _blocking(AsyncGrove.shells)

    service_start = _blocking(AsyncGrove.service_start)
    service_stop = _blocking(AsyncGrove.service_stop)
    service_status = _blocking(AsyncGrove.service_status)
    services = _blocking(AsyncGrove.services)
    service_logs = _iterating(AsyncGrove.service_logs)

    file_list = _blocking(AsyncGrove.file_list)
    file_read = _blocking(AsyncGrove.file_read)
    file_write = _blocking(AsyncGrove.file_write)
    push_files = _blocking(AsyncGrove.push_files)
    pull_files = _blocking(AsyncGrove.pull_files)
    apply_patch = _blocking(AsyncGrove.apply_patch)
    disk_list = _blocking(AsyncGrove.disk_list)
    disk_read = _blocking(AsyncGrove.disk_read)
    disk_export = _blocking(AsyncGrove.disk_export)

    def files(self, ref: str) -> SandboxFiles:
        """One sandbox's files: ``grove.files(box.id).push("./project", "/root/project")``."""
        return SandboxFiles(self, ref)


class SandboxFiles:
    """The blocking twin of AsyncSandboxFiles."""

    def __init__(self, grove: Grove, ref: str) -> None:
        self._grove = grove
        self.ref = ref

    def list(self, path: str, recursive: bool = False) -> list[m.FileEntry]:
        return self._grove.file_list(self.ref, path, recursive)

    def read(self, path: str, max_bytes: int = 0) -> m.FileRead:
        return self._grove.file_read(self.ref, path, max_bytes)

    def write(self, path: str, data: bytes, mode: int = 0o644) -> m.PushResult:
        return self._grove.file_write(self.ref, path, data, mode)

    def push(
        self, source: str | Path, dest: str, exclude: Sequence[str] = (), ignore: bool = True,
        progress: Progress | None = None,
    ) -> m.PushResult:  # fmt: skip
        return self._grove.push_files(self.ref, source, dest, exclude, ignore, progress)

    def pull(
        self, path: str, output: str | Path, as_tar: bool = False, force: bool = False,
        progress: Progress | None = None,
    ) -> m.PullResult:  # fmt: skip
        return self._grove.pull_files(self.ref, path, output, as_tar, force, progress)

    def patch(self, patch: str, dry_run: bool = False) -> m.PatchResult:
        return self._grove.apply_patch(self.ref, patch, dry_run)
