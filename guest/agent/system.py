"""The VM itself: sysinfo, identity after a snapshot-fork, sync and power off.

After a restore every child VM starts with the same RNG state, clock and hostname as the
template. ``restore_identity`` mixes host entropy into the kernel RNG and forces a reseed so
/dev/urandom diverges at once; the engine fails the sandbox unless that is confirmed.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import os
import re
import socket
import struct
import time
from typing import Any

from . import VERSION, log
from .server import Reply, RequestError, Server

RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])
RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07)
PR_SET_CHILD_SUBREAPER = 36
RB_POWER_OFF = 0x4321FEDC
RB_AUTOBOOT = 0x01234567
MIN_ENTROPY_BYTES = 32  # 256 bits: enough to make the CRNG ready even from a cold pool
MAX_ENTROPY_BYTES = 4096
_HOSTNAME = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")


def _libc() -> Any:
    # ctypes is optional in the guest image: without it we fall back where we can.
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def become_subreaper() -> bool:
    """Orphans of our commands re-parent to us, so we can reap them (no zombies)."""
    try:
        libc = _libc()
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            import ctypes

            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    except (ImportError, OSError, AttributeError) as exc:
        log.warning(f"cannot become a child subreaper: {exc}")
        return False
    return True


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    for line in _read("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0])
    return values


def sysinfo() -> Reply:
    mem = meminfo()
    load = [float(x) for x in _read("/proc/loadavg").split()[:3]]
    return {
        "ok": True,
        "hostname": socket.gethostname(),
        "uptime_s": float(_read("/proc/uptime").split()[0]),
        "mem_total_kib": mem.get("MemTotal", 0),
        "mem_available_kib": mem.get("MemAvailable", 0),
        "load": load,
        "boot_id": _read("/proc/sys/kernel/random/boot_id").strip(),
        "time_ns": time.time_ns(),
        "kernel": os.uname().release,
        "cpus": os.cpu_count() or 1,
        "agent": VERSION,
    }


def reseed_rng(entropy: bytes) -> None:
    """Mix entropy into the kernel pool, credited, then force a CRNG reseed.

    Raises OSError (EPERM without CAP_SYS_ADMIN). Crediting matters: on a pool that is not
    yet initialised RNDRESEEDCRNG fails with ENODATA, and a credited 256 bits initialises it.
    """
    fd = os.open("/dev/urandom", os.O_WRONLY | os.O_CLOEXEC)
    try:
        info = struct.pack("ii", len(entropy) * 8, len(entropy)) + entropy
        fcntl.ioctl(fd, RNDADDENTROPY, info)
        fcntl.ioctl(fd, RNDRESEEDCRNG)
    finally:
        os.close(fd)


def _replace_file(path: str, text: str) -> None:
    tmp = path + ".grove-tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def set_hostname(name: str) -> None:
    socket.sethostname(name)


def write_hostname_files(name: str) -> None:
    """Persist the name; file writes are slow under emulation, so this runs after the reply."""
    try:
        _replace_file("/etc/hostname", name + "\n")
    except OSError as exc:
        log.warning(f"cannot write /etc/hostname: {exc}")
        return
    # Keep the name resolvable the way the image's init set it up (127.0.1.1 line).
    try:
        lines = _read("/etc/hosts").splitlines()
    except FileNotFoundError:
        return
    updated = [f"127.0.1.1\t{name}" if line.startswith("127.0.1.1") else line for line in lines]
    if updated != lines:
        _replace_file("/etc/hosts", "\n".join(updated) + "\n")


def poweroff(reboot: bool = False) -> None:
    """Power the VM off now (like ``poweroff -f``): the caller synced already."""
    try:
        libc = _libc()
        libc.reboot(RB_AUTOBOOT if reboot else RB_POWER_OFF)
    except (ImportError, OSError, AttributeError) as exc:
        log.warning(f"reboot(2) unavailable: {exc}")
    # Still here: reboot(2) failed or ctypes is missing. SysRq works from any root process.
    with open("/proc/sysrq-trigger", "w") as f:
        f.write("b" if reboot else "o")


class SystemOps:
    def __init__(self, server: Server) -> None:
        self.server = server
        server.register("sysinfo", lambda _channel, _request: sysinfo())
        server.register("restore_identity", self.op_restore_identity)
        server.register("sync", self.op_sync)
        server.register("shutdown", self.op_shutdown)

    def op_restore_identity(self, channel: int, request: dict[str, Any]) -> Reply:
        entropy_b64 = request.get("entropy_b64")
        time_ns = request.get("time_ns")
        hostname = request.get("hostname")
        if not isinstance(entropy_b64, str):
            raise RequestError("bad_request", "entropy_b64 must be a base64 string")
        try:
            entropy = base64.b64decode(entropy_b64, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError("bad_request", "entropy_b64 is not valid base64") from None
        if not MIN_ENTROPY_BYTES <= len(entropy) <= MAX_ENTROPY_BYTES:
            text = f"entropy must be {MIN_ENTROPY_BYTES}..{MAX_ENTROPY_BYTES} bytes"
            raise RequestError("bad_request", text)
        if isinstance(time_ns, bool) or not isinstance(time_ns, int) or time_ns <= 0:
            raise RequestError("bad_request", "time_ns must be a positive integer")
        if not isinstance(hostname, str) or len(hostname) > 253 or not _HOSTNAME.match(hostname):
            raise RequestError("bad_request", "hostname is not a valid host name")

        try:
            reseed_rng(entropy)
        except OSError as exc:
            log.error(f"RNG reseed failed: {exc}")
            return {
                "ok": False,
                "code": "reseed_failed",
                "error": f"kernel RNG reseed failed: {exc.strerror or exc}",
                "reseeded": False,
            }

        dry_run = self.server.test_mode
        step_ms = round((time_ns - time.time_ns()) / 1e6, 3)
        reply: Reply = {"ok": True, "reseeded": True, "clock_step_ms": step_ms}
        try:
            if not dry_run:
                time.clock_settime_ns(time.CLOCK_REALTIME, time_ns)
        except OSError as exc:
            reply.update(ok=False, code="clock_failed", error=f"clock step failed: {exc}")
            return reply
        try:
            if not dry_run:
                set_hostname(hostname)
        except OSError as exc:
            reply.update(ok=False, code="hostname_failed", error=f"set hostname failed: {exc}")
            return reply
        if not dry_run:
            # Two hops: the reply's flush is queued after this op returns, so the file writes
            # land behind it and the engine is not kept waiting on them.
            loop = self.server.loop
            loop.call_soon(lambda: loop.call_soon(lambda: write_hostname_files(hostname)))
        reply["hostname"] = hostname
        reply["dry_run"] = dry_run
        log.info(f"identity restored: reseeded, clock stepped {step_ms} ms")
        return reply

    def op_sync(self, channel: int, request: dict[str, Any]) -> None:
        def work() -> Reply:
            started = time.monotonic()
            os.sync()
            return {"ok": True, "duration_ms": round((time.monotonic() - started) * 1e3, 3)}

        self.server.run_blocking(channel, "sync", work)

    def op_shutdown(self, channel: int, request: dict[str, Any]) -> Reply | None:
        reboot = bool(request.get("reboot", False))
        # Only a real guest powers off: on a test host the same op would take the machine down.
        real = not self.server.test_mode and self.server.transport.edge_wait
        self.server.reply(channel, {"ok": True, "poweroff": real})
        self.server.flush_now(0.5)
        os.sync()
        if real:
            log.info("powering off" if not reboot else "rebooting")
            poweroff(reboot)
        else:
            log.info("shutdown requested (test mode): exiting instead of powering off")
            self.server.terminate_sessions()
            self.server.loop.stop()
        return None
