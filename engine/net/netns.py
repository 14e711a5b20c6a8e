"""Network namespaces and the links in them, through pyroute2 and a thread per namespace.

A thread that has called setns() lives in the namespace, so everything that must be made
inside one (its netlink socket, the TAP's file descriptor, a listening socket) is made by a
short-lived thread that enters it, does the work and ends. Sockets and file descriptors keep
the namespace they were made in, so they stay usable from the engine's own threads.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pyroute2 import IPRoute

from engine.errors import GroveError

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 0x2
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000

T = TypeVar("T")

log = logging.getLogger(__name__)
_libc = ctypes.CDLL(None, use_errno=True)
_run_dir_ready = False


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def path_of(name: str) -> Path:
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return path_of(name).exists()


def listed(prefix: str) -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))
    except FileNotFoundError:
        return []


def _in_thread(work: Callable[[], T]) -> T:
    """Run work on a thread of its own (which may change its namespace and then ends)."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="grove-netns", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def prepare_run_dir() -> None:
    """Make /run/netns a shared mount point of its own before the first namespace is pinned
    in it, as `ip netns add` does. Otherwise the first `ip netns add` run afterwards (or a
    second engine racing this one) bind-mounts /run/netns over itself, and every namespace
    pinned before is hidden underneath: it can no longer be unmounted by its path, and its
    file cannot be removed (EBUSY). A lock on the directory keeps two engines from both
    mounting it."""
    global _run_dir_ready
    if _run_dir_ready:
        return
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    lock = os.open(NETNS_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # As iproute2: making it shared fails (EINVAL) only when it is not a mount point yet.
        # mountinfo cannot tell, since a covered mount at the same path is listed there too.
        shared = MS_SHARED | MS_REC
        if _libc.mount(b"none", bytes(NETNS_DIR), None, shared, None) != 0:
            _check(_libc.mount(bytes(NETNS_DIR), bytes(NETNS_DIR), None, MS_BIND | MS_REC,
                               None), "bind-mount /run/netns")  # fmt: skip
            _check(_libc.mount(b"none", bytes(NETNS_DIR), None, shared, None),
                   "make /run/netns shared")  # fmt: skip
    finally:
        os.close(lock)
    _run_dir_ready = True


def _is_pinned(target: Path) -> bool:
    """A pinned namespace's file is an nsfs mount: a device other than its directory's."""
    try:
        return target.stat().st_dev != NETNS_DIR.stat().st_dev
    except FileNotFoundError:
        return False


def hidden(prefix: str = "") -> list[str]:
    """Namespaces whose pinning mount is covered by a later mount of /run/netns."""
    names = []
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            point = Path(line.split()[4])
            wanted = point.parent == NETNS_DIR and point.name.startswith(prefix)
            if wanted and not _is_pinned(point):
                names.append(point.name)
    return sorted(set(names))


def create(name: str) -> None:
    """A new, empty namespace pinned by a bind mount at /run/netns/NAME (as `ip netns add`)."""
    prepare_run_dir()
    target = path_of(name)
    if _is_pinned(target):
        raise FileExistsError(errno.EEXIST, f"network namespace {name} already exists")
    # An unpinned file of that name (left by remove() when its mount was hidden) is reused.
    fd = os.open(target, os.O_RDONLY | os.O_CREAT, 0o444)
    os.close(fd)

    def unshare_and_pin() -> None:
        # The thread gets the new namespace; the bind mount keeps it after the thread ends.
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        source = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
        _check(_libc.mount(source, bytes(target), None, MS_BIND, None), "bind-mount netns")

    try:
        _in_thread(unshare_and_pin)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def remove(name: str) -> bool:
    """Unpin a namespace; the kernel frees it (and the links in it) once nothing holds it.
    False when its mount is hidden under a later mount of /run/netns (see prepare_run_dir):
    that one cannot be reached here, so it is reported rather than failing the caller."""
    target = path_of(name)
    if _libc.umount2(bytes(target), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, f"umount {target}: {os.strerror(err)}")
    try:
        target.unlink(missing_ok=True)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        log.warning(
            "network namespace %s is pinned by a mount hidden under another mount of %s; "
            "run 'umount %s' when no other tool is using it, then 'grove doctor'",
            name, NETNS_DIR, NETNS_DIR,
        )  # fmt: skip
        return False
    return True


def run_in(name: str, work: Callable[[], T]) -> T:
    """Run work inside namespace NAME, on a thread that ends afterwards."""

    def entered() -> T:
        fd = os.open(path_of(name), os.O_RDONLY)
        try:
            _check(_libc.setns(fd, CLONE_NEWNET), f"setns({name})")
        finally:
            os.close(fd)
        return work()

    return _in_thread(entered)


def open_tap(ifname: str) -> int:
    """Make a TAP device in the calling thread's namespace; it lives as long as the fd does
    (so it goes with the QEMU that holds it). No vnet header: a TAP backend then offers the
    guest the same virtio-net features as user-mode networking, and a snapshot taken under
    either restores under the other."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", ifname.encode(), IFF_TAP | IFF_NO_PI))
    except BaseException:
        os.close(fd)
        raise
    return fd


def socket_in(name: str, family: int, kind: int) -> socket.socket:
    """A socket that belongs to namespace NAME (for a proxy's upstream or a listener)."""
    return run_in(name, lambda: socket.socket(family, kind))


def write_sysctl(key: str, value: str) -> None:
    """In the calling thread's namespace: /proc/sys/net follows the namespace of whoever
    opens it."""
    Path("/proc/sys", *key.split(".")).write_text(value)


def link_index(ip: IPRoute, ifname: str) -> int:
    found = ip.link_lookup(ifname=ifname)
    if not found:
        raise GroveError(
            "network_failed", f"network device {ifname} is missing", "see 'grove doctor'"
        )
    return int(found[0])


def host_ipv4_addresses() -> set[str]:
    """Every IPv4 address of the host namespace (an allocator never hands one of them out)."""
    with IPRoute() as ip:
        return {str(a.get_attr("IFA_ADDRESS")) for a in ip.get_addr(family=socket.AF_INET)}


def delete_link(ifname: str) -> bool:
    """Delete a link of the host namespace (a veth takes its peer with it); False if absent."""
    with IPRoute() as ip:
        found = ip.link_lookup(ifname=ifname)
        if not found:
            return False
        ip.link("del", index=found[0])
        return True


def host_links(prefix: str) -> list[str]:
    with IPRoute() as ip:
        names = [str(link.get_attr("IFLA_IFNAME")) for link in ip.get_links()]
    return [n for n in names if n.startswith(prefix)]
