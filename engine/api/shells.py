"""Shells over the API: the bidirectional Shell stream and the unary verbs' messages."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from engine.api import grove_pb2 as pb
from engine.errors import GroveError, invalid
from engine.shells.manager import MAX_DIM, describe
from engine.shells.scrollback import decode_prefix
from engine.shells.shell import Shell

if TYPE_CHECKING:
    from engine.shells.manager import Shells

#: Output per message on the stream: small enough to keep keystroke echoes from queueing
#: behind a burst, large enough that a burst is not thousands of messages.
CHUNK = 32 * 1024
DEFAULT_MAX_CHARS = 65536
MAX_MAX_CHARS = 1 << 20
MAX_WAIT_MS = 60_000
#: What the guest agent can send to a process group or a terminal's foreground job.
SIGNALS = ("INT", "TERM", "HUP", "KILL", "QUIT", "USR1", "USR2", "STOP", "CONT", "WINCH")


def signal_name(text: str) -> str:
    """A signal as the guest agent takes it: INT for int, SIGINT or INT."""
    name = text.upper().removeprefix("SIG")
    if name not in SIGNALS:
        raise invalid(f"unsupported signal '{text}'", "use INT, TERM, HUP or KILL")
    return name


def check_size(rows: int, cols: int) -> None:
    """A terminal size as sent (0: keep the default or the current size), within bounds."""
    if not (0 <= rows <= MAX_DIM and 0 <= cols <= MAX_DIM):
        raise invalid(
            f"invalid terminal size {cols}x{rows}",
            f"pass --cols and --rows between 1 and {MAX_DIM}",
        )


def info(shell: Shell) -> pb.ShellInfo:
    data = describe(shell)
    message = pb.ShellInfo(
        sandbox_id=data["sandbox_id"],
        shell_id=data["shell_id"],
        state=data["state"],
        cols=data["cols"],
        rows=data["rows"],
        pid=data["pid"] or 0,
        argv=data["argv"],
        cwd=data["cwd"],
        created_at=data["created_at"],
        signal=data["signal"] or "",
        viewers=data["viewers"],
        cursor=data["cursor"],
    )
    if data["exit_code"] is not None:
        message.exit_code = data["exit_code"]
    return message


async def open_or_find(shells: Shells, request: pb.ShellOpenRequest) -> Shell:
    check_size(request.rows, request.cols)
    if request.shell_id:
        shell = await shells.find(request.sandbox, request.shell_id)
        if shell.running and request.cols and request.rows:
            with contextlib.suppress(GroveError):
                await shell.resize(request.rows, request.cols)
        return shell
    return await shells.open(
        request.sandbox,
        rows=request.rows,
        cols=request.cols,
        cwd=request.cwd,
        command=request.shell,
        term=request.term,
        secret_env=list(request.secret_env),
    )


async def stream(
    shells: Shells, requests: AsyncIterator[pb.ShellInput]
) -> AsyncIterator[pb.ShellOutput]:
    """The Shell RPC: open or attach, then relay until exit, detach or disconnect."""
    first = await anext(aiter(requests), None)
    if first is None or first.WhichOneof("kind") != "open":
        raise invalid("a shell stream must begin with an open message", "upgrade the client")
    shell = await open_or_find(shells, first.open)
    viewer = shell.add_viewer(replay=not first.open.no_replay)
    detached = asyncio.Event()
    failure: list[BaseException] = []

    async def pump_input() -> None:
        try:
            async for message in requests:
                kind = message.WhichOneof("kind")
                if kind == "stdin":
                    await shell.write(message.stdin)
                elif kind == "resize":
                    check_size(message.resize.rows, message.resize.cols)
                    await shell.resize(message.resize.rows, message.resize.cols)
                elif kind == "signal":
                    await shell.signal(signal_name(message.signal))
                elif kind == "detach":
                    break
        except GroveError as exc:
            if exc.code not in ("shell_exited", "shell_unavailable"):
                failure.append(exc)
        finally:
            # The client is gone or asked to go: the shell itself keeps running.
            detached.set()
            shell.kick()

    pump = asyncio.create_task(pump_input())
    try:
        yield pb.ShellOutput(opened=info(shell))
        viewer.state_version = shell.state_version
        while True:
            begin, data = shell.scrollback.read(viewer.cursor, CHUNK)
            if data:
                shell.advanced(viewer, begin + len(data))
                yield pb.ShellOutput(output=data)
                continue
            if viewer.state_version != shell.state_version:
                viewer.state_version = shell.state_version
                if shell.running:
                    yield pb.ShellOutput(state=info(shell))
                    continue
            if not shell.running:
                exit_message = pb.ShellExit(signal=shell.info.signal or "", state=shell.info.state)
                if shell.info.exit_code is not None:
                    exit_message.exit_code = shell.info.exit_code
                yield pb.ShellOutput(exit=exit_message)
                return
            if failure:
                raise failure[0]
            if detached.is_set():
                return
            await shell.changed(timeout=5.0)
    finally:
        shell.remove_viewer(viewer)
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump


async def read(shells: Shells, request: pb.ShellReadRequest) -> pb.ShellReadReply:
    if request.cursor < 0:
        raise invalid(f"invalid cursor {request.cursor}", "pass 0 or a next_cursor from a read")
    max_chars = request.max_chars or DEFAULT_MAX_CHARS
    if not 0 < max_chars <= MAX_MAX_CHARS:
        raise invalid(f"invalid max chars {max_chars}", f"pass 1 to {MAX_MAX_CHARS}")
    if not 0 <= request.wait_ms <= MAX_WAIT_MS:
        raise invalid(f"invalid wait {request.wait_ms} ms", f"pass 0 to {MAX_WAIT_MS}")
    shell = await shells.find(request.sandbox, request.shell_id)
    ring = shell.scrollback
    cursor = min(request.cursor, ring.end)
    if request.wait_ms and shell.running and ring.end <= cursor:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.wait_ms / 1000
        while shell.running and ring.end <= cursor and loop.time() < deadline:
            await shell.changed(timeout=deadline - loop.time())
    begin, data = ring.read(cursor, max_chars * 4)
    text, used = decode_prefix(data, max_chars, final=not shell.running)
    next_cursor = begin + used
    return pb.ShellReadReply(
        output=text,
        cursor=begin,
        next_cursor=next_cursor,
        truncated=begin > cursor or next_cursor < ring.end,
        state=shell.info.state,
    )


async def write(shells: Shells, request: pb.ShellWriteRequest) -> pb.ShellInfo:
    shell = await shells.find(request.sandbox, request.shell_id)
    await shell.write(request.input)
    return info(shell)


async def signal(shells: Shells, request: pb.ShellSignalRequest) -> pb.ShellInfo:
    name = signal_name(request.signal)
    shell = await shells.find(request.sandbox, request.shell_id)
    await shell.signal(name)
    return info(shell)
