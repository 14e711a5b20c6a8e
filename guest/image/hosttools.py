"""Host programs the pipeline runs, the Debian packages that provide them, and how to run them."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from guest.image.errors import ImageBuildError

# Debian packages a host needs to build and boot images (`grove doctor` checks these too).
REQUIRED_HOST_PACKAGES: tuple[str, ...] = (
    "qemu-system-x86",
    "qemu-utils",
    "busybox-static",
    "lz4",
    "debootstrap",
    "e2fsprogs",
)

# Program -> Debian package that ships it, for "install X" remedies.
TOOL_PACKAGES: dict[str, str] = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "busybox": "busybox-static",
    "lz4": "lz4",
    "debootstrap": "debootstrap",
    "mkfs.ext4": "e2fsprogs",
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "dpkg-query": "dpkg",
}

# Static busybox goes into the initramfs, where there is no libc to link against.
BUSYBOX_STATIC = Path("/bin/busybox")

# sbin directories are not on a normal user's PATH but hold mkfs.ext4 and debootstrap.
_EXTRA_PATH = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def which(tool: str) -> str | None:
    """Full path of ``tool`` on PATH or in the sbin directories, else None."""
    found = shutil.which(tool)
    if found:
        return found
    return shutil.which(tool, path=os.pathsep.join(_EXTRA_PATH))


def require(tool: str) -> str:
    """Full path of ``tool``; raise a remedy naming its package when it is missing."""
    path = which(tool)
    if path is None:
        package = TOOL_PACKAGES.get(tool, tool)
        raise ImageBuildError(f"host tool '{tool}' not found", f"apt-get install {package}")
    return path


def missing_tools() -> list[tuple[str, str]]:
    """(tool, package) for every required program the host lacks."""
    missing = [(t, p) for t, p in TOOL_PACKAGES.items() if which(t) is None]
    if not is_static_elf(BUSYBOX_STATIC):
        missing.append((str(BUSYBOX_STATIC), "busybox-static"))
    return missing


def is_static_elf(path: Path) -> bool:
    """True if ``path`` is an ELF executable without a program interpreter (PT_INTERP)."""
    try:
        data = path.read_bytes()[:4096]
    except OSError:
        return False
    if data[:4] != b"\x7fELF" or data[4] != 2:  # ELF64 only
        return False
    phoff = int.from_bytes(data[32:40], "little")
    phentsize = int.from_bytes(data[54:56], "little")
    phnum = int.from_bytes(data[56:58], "little")
    for i in range(phnum):
        start = phoff + i * phentsize
        if start + 4 > len(data):
            return False
        if int.from_bytes(data[start : start + 4], "little") == 3:  # PT_INTERP
            return False
    return True


def static_busybox() -> Path:
    """The host's static busybox; raise if it is missing or dynamically linked."""
    if not is_static_elf(BUSYBOX_STATIC):
        raise ImageBuildError(
            f"{BUSYBOX_STATIC} is missing or not statically linked",
            "apt-get install busybox-static",
        )
    return BUSYBOX_STATIC


def run(
    argv: Sequence[str],
    *,
    what: str,
    cwd: Path | None = None,
    timeout: float | None = 600,
    env: dict[str, str] | None = None,
) -> str:
    """Run ``argv`` (never through a shell) and return stdout; raise with stderr's tail on error."""
    tool = require(argv[0])
    try:
        proc = subprocess.run(
            [tool, *argv[1:]],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ImageBuildError(
            f"{what}: '{argv[0]}' timed out after {timeout:.0f}s", "retry; check host load"
        ) from exc
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise ImageBuildError(
            f"{what}: '{argv[0]}' exited {proc.returncode}: {tail}",
            "see the message above; rerun with --force after fixing",
        )
    return proc.stdout
