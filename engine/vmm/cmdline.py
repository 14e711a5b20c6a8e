"""QEMU command lines for the three ways a VM starts: cold boot, restore, and the fork loader."""

from __future__ import annotations

import itertools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from engine.errors import GroveError
from engine.vmm.accel import Accelerator


@dataclass(frozen=True)
class VmSpec:
    accel: Accelerator
    vcpus: int
    mem_mib: int
    mem_path: Path
    # share=on: this VM writes the memory file (a root that may become a template).
    # share=off: MAP_PRIVATE over a frozen template file, so every write is a private CoW copy.
    mem_shared: bool
    disk: Path | None
    qmp_socket: Path
    ctl_socket: Path
    console_log: Path
    kernel: Path | None = None
    initrd: Path | None = None
    append: str = ""
    incoming: bool = False
    # -S: never run a vCPU (the fork loader only holds memory and device state).
    start_paused: bool = False
    prealloc: bool = False
    # The -netdev backend of the VM's one NIC (engine.net): user-mode, or a TAP by fd. The
    # device is the same for every VM (a snapshot's device state must fit every restore).
    netdev: str = "hubport,id=n0,hubid=0"
    # -name guest=TAG: who owns this QEMU (Paths.vm_tag), readable from /proc by the next
    # engine even when the store never learnt the pid.
    tag: str = ""


def qemu_binary() -> str:
    path = shutil.which("qemu-system-x86_64")
    if path is None:
        raise GroveError(
            "qemu_missing",
            "qemu-system-x86_64 is not installed",
            "apt-get install qemu-system-x86 qemu-utils",
        )
    return path


def build(spec: VmSpec) -> list[str]:
    mem = f"{spec.mem_mib}M"
    backend = (
        f"memory-backend-file,id=mem,size={mem},mem-path={spec.mem_path},"
        f"share={'on' if spec.mem_shared else 'off'}"
    )
    if spec.prealloc:
        backend += ",prealloc=on"
    argv = [
        qemu_binary(),
        *spec.accel.qemu_args(),
        "-M", "microvm,memory-backend=mem",
        "-m", mem,
        "-smp", str(spec.vcpus),
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-object", backend,
        "-serial", f"file:{spec.console_log}",
        "-object", "rng-random,id=rng0,filename=/dev/urandom",
        "-device", "virtio-rng-device,rng=rng0",
        "-device", "virtio-serial-device",
        "-chardev", f"socket,id=ctl,path={spec.ctl_socket},server=on,wait=off",
        "-device", "virtserialport,chardev=ctl,name=ctl",
        "-qmp", f"unix:{spec.qmp_socket},server=on,wait=off",
    ]  # fmt: skip
    if spec.disk is not None:
        argv += [
            "-drive",
            f"file={spec.disk},if=none,id=d0,format=qcow2,cache=unsafe,discard=unmap",
            "-device", "virtio-blk-device,drive=d0",
        ]  # fmt: skip
    else:
        # The fork loader needs a disk device of the same shape but never reads it.
        argv += [
            "-drive", "file=null-co://,if=none,id=d0,format=raw",
            "-device", "virtio-blk-device,drive=d0",
        ]  # fmt: skip
    argv += ["-netdev", spec.netdev, "-device", "virtio-net-device,netdev=n0"]
    if spec.kernel is not None:
        argv += ["-kernel", str(spec.kernel)]
        if spec.initrd is not None:
            argv += ["-initrd", str(spec.initrd)]
        argv += ["-append", spec.append]
    if spec.incoming:
        argv += ["-incoming", "defer"]
    if spec.start_paused:
        argv += ["-S"]
    if spec.tag:
        argv += ["-name", f"guest={spec.tag}"]
    return argv


def qemu_cmdlines() -> dict[int, list[str]]:
    """Every QEMU process on the host, with its argv."""
    found: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if argv and "qemu-system" in argv[0]:
            found[int(entry)] = argv
    return found


def tag_of(argv: list[str]) -> str:
    """The owner tag a Grove QEMU carries (its -name guest=...), or ''."""
    for flag, value in itertools.pairwise(argv):
        if flag == "-name" and value.startswith("guest="):
            return value.removeprefix("guest=").split(",", 1)[0]
    return ""


def pids_using(path: str) -> list[int]:
    """QEMU processes whose command line names path (loaders of an interrupted capture)."""
    return [pid for pid, argv in qemu_cmdlines().items() if any(path in a for a in argv)]
