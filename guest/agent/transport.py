"""The byte pipe to the engine: the virtio-serial port in a VM, a unix socket in tests.

Both look like virtio-serial to the server: a peer can come and go at any time. While no host
is connected the port reads EOF and polls POLLHUP; the fd itself stays valid, so the agent
keeps it and simply waits for bytes again. The unix socket imitates that by reconnecting.
"""

from __future__ import annotations

import errno
import os
import socket

from . import log

READ_SIZE = 256 * 1024
PORTS_DIR = "/sys/class/virtio-ports"


class Transport:
    """Non-blocking byte pipe whose peer may disconnect and come back."""

    name = "transport"
    #: When set, the server watches the fd edge-triggered while disconnected: a port reports
    #: POLLHUP the whole time no host is connected, and a wakeup comes when one connects.
    edge_wait = False

    def fileno(self) -> int:
        raise NotImplementedError

    def connect(self) -> bool:
        """Try to reach a peer now; True if one is there (data may already be waiting)."""
        raise NotImplementedError

    def read(self) -> bytes | None:
        """Bytes from the peer, b"" when it went away, None when nothing is ready."""
        raise NotImplementedError

    def write(self, data: memoryview) -> int | None:
        """Bytes written, None if it would block; raises OSError when the link broke."""
        raise NotImplementedError

    def disconnect(self) -> None:
        """Forget the current peer (its partial data is the server's to discard)."""

    def close(self) -> None:
        """Release the fd for good."""


def find_port(name: str, ports_dir: str = PORTS_DIR) -> str | None:
    """The /dev node of the virtio-serial port called name, if the driver created it."""
    try:
        entries = sorted(os.listdir(ports_dir))
    except OSError:
        return None
    for entry in entries:
        try:
            with open(os.path.join(ports_dir, entry, "name")) as f:
                if f.read().strip() == name:
                    return os.path.join("/dev", entry)
        except OSError:
            continue
    return None


class VirtioPortTransport(Transport):
    edge_wait = True

    def __init__(self, port_name: str = "ctl") -> None:
        self.port_name = port_name
        self.name = f"virtio-port:{port_name}"
        self._fd = -1
        self._pending: bytes | None = None
        self._warned = False

    def fileno(self) -> int:
        return self._fd

    def _open(self) -> bool:
        path = find_port(self.port_name)
        if path is None:
            if not self._warned:
                log.warning(f"virtio port {self.port_name!r} not found yet; waiting")
                self._warned = True
            return False
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as exc:
            if not self._warned:
                log.warning(f"cannot open {path}: {exc}; waiting")
                self._warned = True
            return False
        log.info(f"opened {path}")
        return True

    def connect(self) -> bool:
        if self._fd < 0 and not self._open():
            return False
        if self._pending is not None:
            return True
        # Probe: EAGAIN means a host is connected but quiet, 0 bytes means none is.
        try:
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return True
        except OSError as exc:
            log.debug(f"port probe: {exc}")
            return False
        if not data:
            return False
        self._pending = data
        return True

    def read(self) -> bytes | None:
        if self._pending is not None:
            data, self._pending = self._pending, None
            return data
        try:
            return os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return None

    def write(self, data: memoryview) -> int | None:
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return None

    def disconnect(self) -> None:
        self._pending = None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class UnixSocketTransport(Transport):
    """Connects to a unix socket server, standing in for QEMU's chardev in host tests."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = f"unix:{path}"
        self._sock: socket.socket | None = None

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def connect(self) -> bool:
        if self._sock is not None:
            return True
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN):
                log.debug(f"connect {self.path}: {exc}")
            return False
        sock.setblocking(False)
        self._sock = sock
        return True

    def read(self) -> bytes | None:
        if self._sock is None:
            return b""
        try:
            return self._sock.recv(READ_SIZE)
        except BlockingIOError:
            return None
        except OSError:
            return b""  # ECONNRESET and friends: the peer is gone, same as EOF

    def write(self, data: memoryview) -> int | None:
        if self._sock is None:
            raise OSError(errno.ENOTCONN, "not connected")
        try:
            return self._sock.send(data)
        except BlockingIOError:
            return None

    def disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        self.disconnect()
