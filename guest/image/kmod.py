"""Kernel module metadata read straight from .ko files, and the order to insmod them.

The kernel .deb ships no modules.dep and the host may lack kmod, so the ``depends=`` field is
read from each module's ``.modinfo`` ELF section (NUL-separated ``key=value`` strings).
"""

from __future__ import annotations

import struct
from pathlib import Path

from guest.image.errors import ImageBuildError


def norm(name: str) -> str:
    """Module names treat '-' and '_' alike (virtio-rng.ko is module virtio_rng)."""
    return name.replace("-", "_")


def modinfo(path: Path) -> dict[str, list[str]]:
    """All ``key=value`` pairs of a module's .modinfo section (keys may repeat)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ImageBuildError(
            f"{path.name} is not a little-endian ELF64 module", "rebuild with --force"
        )
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _t, _f, _a, off, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        return name, off, size

    _n, stroff, _s = section(shstrndx)
    info: dict[str, list[str]] = {}
    for i in range(shnum):
        name_off, off, size = section(i)
        end = data.index(b"\0", stroff + name_off)
        if data[stroff + name_off : end] != b".modinfo":
            continue
        for entry in data[off : off + size].split(b"\0"):
            if b"=" in entry:
                key, _, value = entry.decode(errors="replace").partition("=")
                info.setdefault(key, []).append(value)
    return info


def depends(path: Path) -> list[str]:
    values = modinfo(path).get("depends", [""])
    return [norm(d) for d in values[0].split(",") if d]


def index_modules(tree: Path) -> dict[str, Path]:
    """Module name -> .ko path for every module under ``tree`` (e.g. lib/modules/<release>)."""
    return {norm(p.name.removesuffix(".ko")): p for p in tree.rglob("*.ko")}


def load_order(wanted: list[str], index: dict[str, Path], builtin: set[str]) -> list[str]:
    """Modules to insmod, dependencies first (depth-first topological order).

    Names in ``builtin`` are compiled into the kernel and skipped. A wanted module that is
    neither a module nor built in is an error: the guest would boot without a driver.
    """
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if state.get(name) == "done" or name in builtin:
            return
        if state.get(name) == "visiting":
            raise ImageBuildError(
                f"module dependency cycle: {' -> '.join((*chain, name))}", "report this kernel"
            )
        if name not in index:
            raise ImageBuildError(
                f"kernel has no module or built-in '{name}'"
                + (f" (needed by {chain[-1]})" if chain else ""),
                "pick a kernel package that provides it, or drop it from the recipe",
            )
        state[name] = "visiting"
        for dep in depends(index[name]):
            visit(dep, (*chain, name))
        state[name] = "done"
        order.append(name)

    for name in wanted:
        visit(norm(name), ())
    return order


def builtin_modules(tree: Path) -> set[str]:
    """Names from ``modules.builtin`` (paths like kernel/fs/ext4/ext4.ko)."""
    listing = tree / "modules.builtin"
    if not listing.is_file():
        return set()
    lines = listing.read_text().split()
    return {norm(Path(line).name.removesuffix(".ko")) for line in lines}
