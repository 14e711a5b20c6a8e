"""The initramfs layer: busybox, the virtio modules, the agent payload and the two inits.

Pure Python (see ``cpio``), reproducible byte for byte from the same inputs, about a second.
"""

from __future__ import annotations

import gzip
import json
import stat
from collections.abc import Callable
from pathlib import Path

from guest.image import cpio, kernel
from guest.image.errors import ImageBuildError
from guest.image.hosttools import static_busybox
from guest.image.payload import payload_digest, payload_files

Progress = Callable[[str, float | None], None]

INITRAMFS = "initramfs.cpio.gz"
_HERE = Path(__file__).parent
STAGE1 = _HERE / "init"
STAGE2 = _HERE / "stage2.sh"

# Applets the stage-1 init calls by name (it runs with PATH=/bin).
APPLETS = (
    "sh",
    "mount",
    "umount",
    "mkdir",
    "insmod",
    "cat",
    "cp",
    "ln",
    "ls",
    "usleep",
    "sleep",
    "switch_root",
    "poweroff",
    "sync",
    "dmesg",
    "tail",
)


def entries(kernel_layer: Path, payload_root: Path | None = None) -> list[cpio.Entry]:
    """Every archive member, parents before children."""
    items: list[cpio.Entry] = [
        cpio.directory(d)
        for d in (
            "bin",
            "dev",
            "etc",
            "lib",
            "lib/modules",
            "lib/modules/grove",
            "newroot",
            "proc",
            "run",
            "sys",
            "tmp",
            "grove",
        )
    ]
    # The kernel opens /dev/console for PID 1 before devtmpfs is mounted.
    items += [cpio.chardev("dev/console", 5, 1), cpio.chardev("dev/null", 1, 3, 0o666)]
    items.append(cpio.file("bin/busybox", static_busybox().read_bytes(), 0o755))
    items += [cpio.symlink(f"bin/{a}", "busybox") for a in APPLETS]

    order = (kernel_layer / kernel.MODULES_ORDER).read_text().split()
    items.append(cpio.file("lib/modules/grove/order", "".join(f"{m}\n" for m in order).encode()))
    for name in order:
        ko = kernel_layer / kernel.MODULES_DIR / f"{name}.ko"
        items.append(cpio.file(f"lib/modules/grove/{name}.ko", ko.read_bytes()))

    items.append(cpio.file("init", STAGE1.read_bytes(), 0o755))
    items.append(cpio.file("grove/init", STAGE2.read_bytes(), 0o755))
    files = payload_files(payload_root)
    dirs = sorted({p for rel, _ in files for p in _parents(rel)})
    items += [cpio.directory(f"grove/{d}") for d in dirs]
    items += [cpio.file(f"grove/{rel}", path.read_bytes()) for rel, path in files]
    info = {"payload": payload_digest(payload_root), "files": [rel for rel, _ in files]}
    items.append(cpio.file("grove/payload.json", json.dumps(info, indent=2).encode() + b"\n"))
    return items


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def build(
    kernel_layer: Path, dest: Path, progress: Progress, payload_root: Path | None = None
) -> dict[str, object]:
    """Write ``dest/initramfs.cpio.gz``; return manifest details."""
    progress("initramfs: packing busybox, modules and agent", None)
    members = entries(kernel_layer, payload_root)
    blob = cpio.pack(members)
    progress("initramfs: compressing", None)
    # mtime=0 keeps the output identical for identical inputs.
    (dest / INITRAMFS).write_bytes(gzip.compress(blob, compresslevel=9, mtime=0))
    return {
        "members": len(members),
        "uncompressed_bytes": len(blob),
        "payload": payload_digest(payload_root),
    }


def verify(layer: Path) -> None:
    """Raise unless the archive gunzips, parses and holds executable inits and busybox."""
    try:
        members = {
            e.name: e for e in cpio.unpack(gzip.decompress((layer / INITRAMFS).read_bytes()))
        }
    except (OSError, ValueError, EOFError) as exc:
        raise ImageBuildError(
            f"initramfs layer is unreadable: {exc}", "rebuild with --force"
        ) from exc
    for required in ("init", "grove/init", "bin/busybox"):
        entry = members.get(required)
        if entry is None or not stat.S_ISREG(entry.mode) or not entry.mode & 0o100:
            raise ImageBuildError(
                f"initramfs lacks an executable /{required}", "rebuild with --force"
            )
