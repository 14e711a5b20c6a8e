"""Named points where a test can make the engine die, to prove that a crash there leaks nothing.

Each step of create, capture (fork and snapshot), reset, terminate, stop, start, engine stop,
template boot and pool refill passes a named point. An engine started with
``GROVE_CRASH_AT=<point>`` kills itself with SIGKILL the first time it reaches that point, after
writing one log line that says so; any other engine never reads the variable again. The next
engine must then find everything the dead one owned (see ``engine/sandbox/ownership.py``).
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

#: Every point, in the order an operation passes them. Tests iterate over this tuple.
POINTS: tuple[str, ...] = (
    "template.spawned",  # an environment's first boot: QEMU started, nothing frozen yet
    "create.recorded",  # the sandbox row exists; no disk, no VM
    "create.disk_made",  # its overlay exists; no VM
    "create.network_made",  # its namespace, veth and chain exist; no VM
    "create.spawned",  # its QEMU runs; the pid is not recorded yet
    "create.restored",  # the guest runs from the template; no identity yet
    "create.running",  # the row says running; the caller has no reply yet
    "capture.children_recorded",  # fork: child rows and dirs exist; nothing started
    "capture.targets_started",  # loader and child QEMUs wait for state
    "capture.paused",  # the source is stopped; its disk is not frozen yet
    "capture.disk_frozen",  # the source (phase paused) writes a new top layer; RAM not copied
    "capture.migrated",  # the source's RAM is in the loader; the source is still paused
    "capture.resumed",  # the source runs again; the loader has not written its state
    "capture.state_written",  # the template's state file exists; its row still says building
    "capture.template_ready",  # the template row is ready; children not restored
    "capture.children_restored",  # children run; the caller has no reply yet
    "reset.vm_ended",  # the old VM is gone; no new one yet
    "reset.launched",  # the new VM waits for state
    "terminate.vm_ended",  # the VM is gone; files and row remain
    "terminate.files_removed",  # files are gone; the row still says live
    "stop.vm_ended",  # the VM quit; the row still says running
    "start.spawned",  # a cold boot's QEMU runs; the pid is not recorded yet
    "pool.spawned",  # a warm-pool QEMU runs; not restored yet
    "pool.warm",  # a warm-pool VM is ready; not yet in the pool
    "shutdown.stopping",  # engine stop has stopped one sandbox of several
)

_TARGET = os.environ.get("GROVE_CRASH_AT", "")
if _TARGET and _TARGET not in POINTS:
    raise SystemExit(f"GROVE_CRASH_AT={_TARGET} names no crash point; see engine/crashpoints.py")


def reached(point: str) -> None:
    """Die here if this engine was told to (tests only); otherwise a no-op."""
    assert point in POINTS, point
    if point != _TARGET:
        return
    log.warning("crash point %s reached: killing the engine", point)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)
