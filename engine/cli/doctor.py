"""grove doctor: can this host run sandboxes, and if not, what to do about it."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from dataclasses import asdict, dataclass

import psutil

from engine.cli.context import Context
from engine.cli.output import emit_json, iec, table
from engine.client import socket_alive
from engine.net import doctor as net_doctor
from engine.vmm import accel

MIN_FREE_DISK = 2 << 30
MIN_FREE_MEM = 1 << 30


@dataclass
class Check:
    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str
    remedy: str = ""


def _qemu() -> Check:
    path = shutil.which("qemu-system-x86_64")
    if path is None:
        return Check("qemu", "fail", "qemu-system-x86_64 not found",
                     "apt-get install qemu-system-x86 qemu-utils")  # fmt: skip
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    version = out.stdout.splitlines()[0] if out.stdout else "unknown version"
    if shutil.which("qemu-img") is None:
        return Check("qemu", "fail", f"{version}; qemu-img missing", "apt-get install qemu-utils")
    return Check("qemu", "ok", version)


def _accelerator() -> tuple[Check, Check, str]:
    probe = accel.probe()
    kind = accel.kvm_kind()
    kvm_detail = {
        "hardware": "/dev/kvm with hardware virtualization",
        "pvm": "/dev/kvm is kvm_pvm: Debian guest kernels cannot run on it",
        "absent": "/dev/kvm missing",
        "no-access": "/dev/kvm exists but is not accessible",
    }[kind]
    kvm = Check("kvm", "ok" if kind == "hardware" else "warn", kvm_detail,
                "" if kind == "hardware" else "enable VT-x/AMD-V (or nested virtualization) "
                "for KVM speed; TCG works meanwhile")  # fmt: skip
    status = "ok" if probe.name == "kvm" else "warn"
    check = Check(
        "accelerator",
        status,
        f"{probe.name}: {probe.reason}",
        "" if status == "ok" else "TCG runs everything, ~10-40x slower than KVM",
    )
    return check, kvm, probe.name


def _image_tools() -> Check:
    from guest.image.hosttools import missing_tools

    missing = missing_tools()
    if missing:
        packages = sorted({pkg for _tool, pkg in missing})
        return Check("image tools", "fail", "missing: " + ", ".join(t for t, _ in missing),
                     "apt-get install " + " ".join(packages))  # fmt: skip
    return Check("image tools", "ok", "debootstrap, busybox-static, lz4, mkfs.ext4 present")


def _images(ctx: Context) -> Check:
    from guest.image import builder

    cached = [e.name for e in builder.list_environments(ctx.paths.home)]
    if not cached:
        return Check("images", "warn", "no environment pulled yet",
                     "grove env pull debian:12")  # fmt: skip
    return Check("images", "ok", "cached: " + ", ".join(cached))


def _state_dir(ctx: Context) -> Check:
    home = ctx.paths.home
    if not home.exists():
        return Check("state dir", "ok", f"{home} will be created (mode 0700)")
    mode = stat.S_IMODE(home.stat().st_mode)
    if home.stat().st_uid != os.geteuid():
        return Check("state dir", "fail", f"{home} belongs to another user",
                     f"chown -R {os.geteuid()} {home} or set GROVE_HOME")  # fmt: skip
    if mode & 0o077:
        return Check("state dir", "warn", f"{home} is mode {mode:o}", f"chmod 700 {home}")
    sock = ctx.paths.socket
    if sock.exists() and stat.S_IMODE(sock.stat().st_mode) & 0o007:
        return Check("state dir", "fail", f"engine socket {sock} is world-accessible",
                     "restart the engine: 'grove engine stop && grove engine start'")  # fmt: skip
    running = "engine running" if socket_alive(ctx.paths) else "engine not running"
    return Check("state dir", "ok", f"{home} mode {mode:o}; {running}")


def _resources(ctx: Context) -> list[Check]:
    probe = ctx.paths.home if ctx.paths.home.exists() else ctx.paths.home.parent
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    mem = psutil.virtual_memory().available
    shm = ctx.paths.memory_dir
    return [
        Check("disk", "ok" if free >= MIN_FREE_DISK else "fail", f"{iec(free)} free at {probe}",
              "" if free >= MIN_FREE_DISK else "free disk space or set GROVE_HOME elsewhere"),
        Check("memory", "ok" if mem >= MIN_FREE_MEM else "fail", f"{iec(mem)} available",
              "" if mem >= MIN_FREE_MEM else "stop other workloads; each sandbox needs ~40 MiB"),
        Check("guest memory dir", "ok", f"{shm}"),
    ]  # fmt: skip


def _tsc() -> Check:
    from guest.image.hostparams import lpj, tsc_khz

    try:
        khz, loops = tsc_khz(), lpj()
    except Exception as exc:  # a missing /proc field must not crash the doctor
        return Check("tsc", "fail", f"cannot read TSC parameters: {exc}",
                     "check /proc/cpuinfo is readable")  # fmt: skip
    return Check("tsc", "ok", f"tsc_early_khz={khz} lpj={loops} (keeps microvm boots reliable)")


def _network() -> list[Check]:
    return [Check(c.name, c.status, c.detail, c.remedy) for c in net_doctor.checks()]


def doctor(ctx: Context) -> int:
    acc_check, kvm_check, acc_name = _accelerator()
    checks = [_qemu(), acc_check, kvm_check, _image_tools(), _images(ctx), _state_dir(ctx),
              *_resources(ctx), _tsc(), *_network()]  # fmt: skip
    ok = not any(c.status == "fail" for c in checks)
    if ctx.json:
        emit_json({"ok": ok, "accelerator": acc_name, "checks": [asdict(c) for c in checks]})
    else:
        marks = {"ok": "ok", "warn": "WARN", "fail": "FAIL"}
        rows = [[marks[c.status], c.name, c.detail] for c in checks]
        print(table(["", "CHECK", "DETAIL"], rows))
        for c in checks:
            if c.remedy and c.status != "ok":
                print(f"  {c.name}: {c.remedy}")
        print("host can run sandboxes" if ok else "host cannot run sandboxes: fix the FAIL lines")
    return 0 if ok else 1
