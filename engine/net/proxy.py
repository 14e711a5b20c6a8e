"""A published port in namespace mode: 127.0.0.1:HOST_PORT on the host, relayed to the guest.

The listener is the engine's, in the host namespace; each connection's upstream socket is made
inside the sandbox's namespace (engine.net.netns.socket_in) and connects to the guest's port
there. Ingress therefore exists only for ports published this way, and closing the proxy (the
policy turned off, the port unpublished, the VM ended) closes every connection through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

from engine.net import netns

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
CONNECT_TIMEOUT_S = 10.0


class PortProxy:
    def __init__(
        self,
        namespace: str,
        guest: tuple[str, int],
        allowed: Callable[[], bool],
    ) -> None:
        self._namespace = namespace
        self._guest = guest
        self._allowed = allowed
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self.host = ""
        self.host_port = 0

    async def listen(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._accepted, host, port, reuse_address=True)
        sockname = self._server.sockets[0].getsockname()
        self.host, self.host_port = str(sockname[0]), int(sockname[1])

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            if not self._allowed():
                return
            upstream = await asyncio.to_thread(
                netns.socket_in, self._namespace, socket.AF_INET, socket.SOCK_STREAM
            )
            upstream.setblocking(False)
            loop = asyncio.get_running_loop()
            try:
                await asyncio.wait_for(loop.sock_connect(upstream, self._guest), CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                upstream.close()
                log.debug("published port %s: guest refused: %s", self.host_port, exc)
                return
            guest_reader, guest_writer = await asyncio.open_connection(sock=upstream)
            try:
                await asyncio.gather(_pump(reader, guest_writer), _pump(guest_reader, writer))
            finally:
                guest_writer.close()
        finally:
            self._pipes.discard(task)
            writer.close()

    def cut(self) -> None:
        """Close every open connection (the listener stays)."""
        for task in list(self._pipes):
            task.cancel()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        pipes = list(self._pipes)
        self.cut()
        for task in pipes:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()
    except (ConnectionError, OSError):
        pass
