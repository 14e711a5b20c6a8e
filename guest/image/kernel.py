"""The kernel layer: a Debian cloud kernel as an ELF vmlinux plus the virtio modules.

An ELF vmlinux (not the bzImage) lets QEMU boot it through the PVH entry point, which skips
the in-guest LZ4 decompression: about half a second faster under TCG.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from guest.image import kmod
from guest.image.errors import ImageBuildError
from guest.image.hosttools import require, run
from guest.image.recipes import EnvironmentRecipe, KernelRef

Progress = Callable[[str, float | None], None]

LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"
VMLINUX = "vmlinux"
MODULES_DIR = "modules"
MODULES_ORDER = "modules.order"  # one module name per line, in insmod order
KERNEL_INFO = "kernel.json"

# apt as root otherwise warns that it cannot drop to the _apt user in a private temp dir.
_APT_OPTS = ("-o", "APT::Sandbox::User=root")


def _depends_of(meta: str) -> str | None:
    out = run(["apt-cache", "depends", meta], what=f"resolving {meta}", timeout=120)
    for line in out.splitlines():
        m = re.match(r"\s*Depends:\s*(linux-image-\S+)", line)
        if m:
            return m.group(1)
    return None


def _candidate(package: str) -> str | None:
    out = run(["apt-cache", "policy", package], what=f"resolving {package}", timeout=120)
    m = re.search(r"Candidate:\s*(\S+)", out)
    return m.group(1) if m and m.group(1) != "(none)" else None


def _apt_update(progress: Progress) -> None:
    progress("kernel: refreshing package lists (apt-get update)", None)
    try:
        run(["apt-get", *_APT_OPTS, "update"], what="apt-get update", timeout=600)
    except ImageBuildError as exc:
        raise ImageBuildError(
            f"cannot refresh package lists: {exc.message}",
            "check network access to the Debian mirror in /etc/apt/sources.list*",
        ) from exc


def resolve(recipe: EnvironmentRecipe, progress: Progress) -> KernelRef:
    """The concrete package behind the recipe's kernel meta package, and its version."""
    meta = recipe.kernel_package
    package = _depends_of(meta) if _candidate(meta) else None
    if package is None:
        # Empty or stale lists: refresh once, then ask again.
        _apt_update(progress)
        package = _depends_of(meta) if _candidate(meta) else None
    version = _candidate(package) if package else None
    if package is None or version is None:
        raise ImageBuildError(
            f"apt knows no kernel package behind '{meta}'",
            "add a Debian main source to /etc/apt/sources.list and run apt-get update",
        )
    return KernelRef(package=package, version=version)


def _download(ref: KernelRef, workdir: Path, progress: Progress) -> Path:
    progress(f"kernel: downloading {ref.package} {ref.version}", None)
    argv = ["apt-get", *_APT_OPTS, "download", f"{ref.package}={ref.version}"]
    try:
        run(argv, what="downloading the kernel", cwd=workdir, timeout=600)
    except ImageBuildError:
        # A version that left the mirror since the last apt-get update: refresh and retry.
        _apt_update(progress)
        try:
            run(argv, what="downloading the kernel", cwd=workdir, timeout=600)
        except ImageBuildError as exc:
            raise ImageBuildError(
                f"cannot download {ref.package}={ref.version}: {exc.message}",
                "check network access to the Debian mirror, or rebuild with --force",
            ) from exc
    debs = sorted(workdir.glob("*.deb"))
    if not debs:
        raise ImageBuildError(f"apt-get download left no .deb for {ref.package}", "retry")
    return debs[0]


def bzimage_to_elf(bzimage: Path, out: Path, scratch: Path) -> None:
    """Decompress an LZ4 bzImage's payload into an ELF vmlinux at ``out``.

    The payload is an LZ4 legacy frame; ``lz4`` stops at the kernel's trailing size word
    and may report it, so success is judged by the ELF header of the result.
    """
    data = bzimage.read_bytes()
    start = data.find(LZ4_LEGACY_MAGIC)
    while start != -1:
        chunk = scratch / "payload.lz4"
        chunk.write_bytes(data[start:])
        out.unlink(missing_ok=True)
        # The exit status is not trusted either way (see above); the ELF check decides.
        subprocess.run(
            [require("lz4"), "-d", "-q", "-f", str(chunk), str(out)],
            capture_output=True,
            check=False,
            timeout=300,
        )
        chunk.unlink()
        if is_x86_64_elf(out):
            return
        start = data.find(LZ4_LEGACY_MAGIC, start + 1)
    raise ImageBuildError(
        f"{bzimage.name}: no LZ4 payload that decompresses to an ELF vmlinux",
        "this kernel is not LZ4-compressed; pick a Debian cloud kernel",
    )


def is_x86_64_elf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(20)
    except OSError:
        return False
    return head[:5] == b"\x7fELF\x02" and head[18:20] == b"\x3e\x00"


def _config_value(config: Path, key: str) -> str | None:
    m = re.search(rf"^{key}=(.*)$", config.read_text(), re.MULTILINE)
    return m.group(1).strip('"') if m else None


def build(
    recipe: EnvironmentRecipe, ref: KernelRef, dest: Path, progress: Progress
) -> dict[str, object]:
    """Fill ``dest`` with vmlinux, modules/*.ko and modules.order; return manifest details."""
    with tempfile.TemporaryDirectory(prefix="kernel-", dir=dest) as tmp:
        work = Path(tmp)
        deb = _download(ref, work, progress)
        progress("kernel: extracting package", None)
        root = work / "root"
        run(["dpkg-deb", "-x", str(deb), str(root)], what="extracting the kernel package")
        vmlinuz = sorted((root / "boot").glob("vmlinuz-*"))
        if not vmlinuz:
            raise ImageBuildError(f"{deb.name} holds no /boot/vmlinuz-*", "pick another kernel")
        release = vmlinuz[0].name.removeprefix("vmlinuz-")
        progress("kernel: decompressing vmlinux", None)
        bzimage_to_elf(vmlinuz[0], dest / VMLINUX, work)

        tree = root / "lib" / "modules" / release
        config = root / "boot" / f"config-{release}"
        builtin = kmod.builtin_modules(tree)
        # modules.builtin and the config agree; the config also covers a missing listing.
        for name in recipe.modules:
            option = {"ext4": "CONFIG_EXT4_FS"}.get(kmod.norm(name))
            if option and config.is_file() and _config_value(config, option) == "y":
                builtin.add(kmod.norm(name))
        index = kmod.index_modules(tree)
        order = kmod.load_order(list(recipe.modules), index, builtin)
        progress(f"kernel: collecting {len(order)} modules", None)
        (dest / MODULES_DIR).mkdir()
        for name in order:
            shutil.copyfile(index[name], dest / MODULES_DIR / f"{name}.ko")
        (dest / MODULES_ORDER).write_text("".join(f"{n}\n" for n in order))
        hz = _config_value(config, "CONFIG_HZ") if config.is_file() else None
        info: dict[str, object] = {
            "package": ref.package,
            "version": ref.version,
            "release": release,
            "modules": order,
            "builtin": sorted(kmod.norm(m) for m in recipe.modules if kmod.norm(m) in builtin),
            "hz": int(hz) if hz and hz.isdigit() else 250,
        }
        (dest / KERNEL_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return info


def verify(layer: Path) -> None:
    """Raise unless the layer holds an x86-64 ELF vmlinux and every listed module."""
    if not is_x86_64_elf(layer / VMLINUX):
        raise ImageBuildError("kernel layer: vmlinux is not an x86-64 ELF", "rebuild with --force")
    for name in (layer / MODULES_ORDER).read_text().split():
        if (layer / MODULES_DIR / f"{name}.ko").read_bytes()[:4] != b"\x7fELF":
            raise ImageBuildError(f"kernel layer: module {name} is damaged", "rebuild with --force")
