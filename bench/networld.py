"""Test "outside worlds": network namespaces a test makes itself, each with a TCP server.

Every address is inside the namespace's own /30 of 198.18.0.0/15 (the range set aside for
network tests), reached from the host over a veth pair the test owns. Nothing is ever sent to
any other address.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PORT = 7000

#: On PORT: greets each connection with "hello <world>", then answers every line it receives
#: with "ack" and appends it to a log (one file per world) as "<peer> <line>". On PORT + 1 (a
#: sink, for throughput): reads to EOF, then answers with the byte count.
SERVER = r"""
import socket, sys, threading
name, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def listen(p):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", p)); s.listen(64)
    return s
srv, sink = listen(port), listen(port + 1)
lock = threading.Lock()
def drain(conn):
    total = 0
    while data := conn.recv(1 << 16):
        total += len(data)
    conn.sendall(f"{total}\n".encode()); conn.close()
def sinks():
    while True:
        conn, _ = sink.accept()
        threading.Thread(target=drain, args=(conn,), daemon=True).start()
threading.Thread(target=sinks, daemon=True).start()
def serve(conn, peer):
    conn.sendall(f"hello {name}\n".encode())
    buf = b""
    try:
        while data := conn.recv(4096):
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                with lock, open(log, "a") as f:
                    f.write(f"{peer[0]} {line.decode(errors='replace')}\n")
                conn.sendall(b"ack\n")
    except OSError:
        pass
    conn.close()
print("ready", flush=True)
while True:
    conn, peer = srv.accept()
    threading.Thread(target=serve, args=(conn, peer), daemon=True).start()
"""


@dataclass
class World:
    name: str
    host_device: str
    address: str
    host_address: str
    log: Path
    server: subprocess.Popen[bytes]

    def received(self) -> list[str]:
        try:
            return self.log.read_text().splitlines()
        except FileNotFoundError:
            return []


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def world(tmp: Path, index: int) -> Iterator[World]:
    """A namespace 'gtw<token>' at 198.18.<N>.2 serving on PORT; removed afterwards."""
    token = secrets.token_hex(3)
    name, host_dev = f"gtw{token}", f"gtw{token}h"
    third = 64 + (int(token, 16) + index * 37) % 180
    host_ip, ns_ip = f"198.18.{third}.1", f"198.18.{third}.2"
    server: subprocess.Popen[bytes] | None = None
    try:
        _ip("netns", "add", name)
        _ip("link", "add", host_dev, "type", "veth", "peer", "name", "eth0", "netns", name)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_dev)
        _ip("link", "set", host_dev, "up")
        # Forwarding for what comes back from this world only (to the sandboxes).
        Path(f"/proc/sys/net/ipv4/conf/{host_dev}/forwarding").write_text("1")
        _ip("-n", name, "addr", "add", f"{ns_ip}/30", "dev", "eth0")
        _ip("-n", name, "link", "set", "eth0", "up")
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "route", "add", "default", "via", host_ip)
        log = tmp / f"{name}.log"
        server = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-c", SERVER, name, str(PORT), str(log)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert server.stdout is not None
        assert server.stdout.readline().strip() == b"ready", "test server did not start"
        yield World(name, host_dev, ns_ip, host_ip, log, server)
    finally:
        if server is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, 9)
            server.wait()
        subprocess.run(["ip", "link", "del", host_dev], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def connect_script(address: str, port: int = PORT, timeout: float = 4.0) -> str:
    """Guest-side python: connect, print the greeting; exit 3 when it cannot connect."""
    return (
        "import socket, sys\n"
        "try:\n"
        f"    s = socket.create_connection(({address!r}, {port}), timeout={timeout})\n"
        "    print(s.recv(100).decode().strip())\n"
        "except OSError as exc:\n"
        "    print('cannot connect:', exc); sys.exit(3)\n"
    )


def wait_for(check: object, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
