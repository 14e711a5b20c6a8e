"""Build, find and prune environment images (kernel + initramfs + rootfs layers).

    <home>/envs/<safe-name>/manifest.json   the environment: recipe hash and its layer keys
    <home>/images/<layer>/<key>/            the layers themselves (see ``store``)

An environment manifest names layers by key, never by absolute path, so a GROVE home can
be moved or copied and its images stay valid.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from guest.image import initramfs, kernel, rootfs, store
from guest.image.errors import ImageBuildError
from guest.image.fsutil import disk_usage, remove_tree
from guest.image.payload import payload_digest
from guest.image.recipes import (
    EnvironmentRecipe,
    KernelRef,
    LayerKeys,
    get_recipe,
    known_environments,
    layer_keys,
    recipe_hash,
)

Progress = Callable[[str, float | None], None]

__all__ = [
    "EnvironmentImage",
    "build_environment",
    "inspect_environment",
    "known_environments",
    "list_environments",
    "needs_rebuild",
    "prune",
]


@dataclass(frozen=True)
class EnvironmentImage:
    """A built environment: what QEMU needs to boot it, and where it came from."""

    name: str
    recipe_hash: str
    kernel: Path  # ELF vmlinux, for -kernel (boots via PVH)
    initramfs: Path  # gzipped newc cpio, for -initrd
    rootfs: Path  # qcow2, use as a read-only backing file of per-VM overlays
    kernel_bytes: int
    initramfs_bytes: int
    rootfs_bytes: int  # allocated size of the qcow2 file
    created: float  # unix time the environment manifest was written
    kernel_key: str
    initramfs_key: str
    rootfs_key: str
    kernel_package: str  # e.g. linux-image-6.1.0-56-cloud-amd64
    kernel_version: str  # Debian package version
    kernel_release: str  # uname -r in the guest
    kernel_hz: int  # CONFIG_HZ, for the lpj= boot parameter
    manifest: Path


def safe_name(name: str) -> str:
    """Directory name for an environment: 'debian:12' -> 'debian_12'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def env_dir(home: Path, name: str) -> Path:
    return home / "envs" / safe_name(name)


def _noop(_stage: str, _fraction: float | None) -> None:
    pass


def _load(home: Path, manifest_dir: Path) -> EnvironmentImage | None:
    """The environment described in ``manifest_dir``, or None if it or a layer is missing."""
    data = store.read_manifest(manifest_dir)
    if data is None:
        return None
    try:
        keys = data["layers"]
        layers = {layer: store.layer_dir(home, layer, keys[layer]) for layer in store.LAYERS}
        if any(store.read_manifest(d) is None for d in layers.values()):
            return None
        paths = {
            "kernel": layers["kernel"] / kernel.VMLINUX,
            "initramfs": layers["initramfs"] / initramfs.INITRAMFS,
            "rootfs": layers["rootfs"] / rootfs.ROOTFS,
        }
        sizes = {k: p.stat().st_size for k, p in paths.items()}
        sizes["rootfs"] = disk_usage(paths["rootfs"])
        info = data["kernel"]
        return EnvironmentImage(
            name=data["name"],
            recipe_hash=data["recipe_hash"],
            kernel=paths["kernel"],
            initramfs=paths["initramfs"],
            rootfs=paths["rootfs"],
            kernel_bytes=sizes["kernel"],
            initramfs_bytes=sizes["initramfs"],
            rootfs_bytes=sizes["rootfs"],
            created=float(data["created"]),
            kernel_key=keys["kernel"],
            initramfs_key=keys["initramfs"],
            rootfs_key=keys["rootfs"],
            kernel_package=info["package"],
            kernel_version=info["version"],
            kernel_release=info["release"],
            kernel_hz=int(info["hz"]),
            manifest=manifest_dir / store.MANIFEST,
        )
    except (KeyError, TypeError, ValueError, OSError):
        return None


def _previous_kernel(home: Path, recipe: EnvironmentRecipe) -> KernelRef | None:
    """The kernel an earlier build of this environment used, if still cached.

    Rebuilding for an agent change keeps that kernel instead of asking apt again, so only
    the initramfs is rebuilt; ``force=True`` re-resolves.
    """
    data = store.read_manifest(env_dir(home, recipe.name))
    try:
        if data is None or data["recipe"]["kernel_package"] != recipe.kernel_package:
            return None
        if data["recipe"]["modules"] != list(recipe.modules):
            return None
        ref = KernelRef(package=data["kernel"]["package"], version=data["kernel"]["version"])
        old_key = data["layers"]["kernel"]
    except (KeyError, TypeError):
        return None
    return ref if store.is_complete(home, "kernel", old_key) else None


def _build_layers(
    recipe: EnvironmentRecipe, home: Path, payload: str, force: bool, progress: Progress
) -> tuple[LayerKeys, dict[str, Any]]:
    ref = None if force else _previous_kernel(home, recipe)
    if ref is None:
        progress(f"kernel: resolving {recipe.kernel_package}", None)
        ref = kernel.resolve(recipe, progress)
    keys = layer_keys(recipe, ref, payload)
    kdir = _layer(
        home,
        "kernel",
        keys.kernel,
        force,
        progress,
        lambda d: kernel.build(recipe, ref, d, progress),
    )
    _layer(
        home,
        "initramfs",
        keys.initramfs,
        force,
        progress,
        lambda d: initramfs.build(kdir, d, progress),
    )
    log = home / "logs" / f"debootstrap-{keys.rootfs[:12]}.log"  # outlives a failed build
    _layer(
        home,
        "rootfs",
        keys.rootfs,
        force,
        progress,
        lambda d: rootfs.build(recipe, d, keys.rootfs, progress, log),
    )
    info = store.read_manifest(kdir) or {}
    return keys, info.get("details", {})


_VERIFY: dict[str, Callable[[Path], None]] = {
    "kernel": kernel.verify,
    "initramfs": initramfs.verify,
    "rootfs": rootfs.verify,
}


def _layer(
    home: Path,
    layer: str,
    key: str,
    force: bool,
    progress: Progress,
    build: Callable[[Path], dict[str, Any]],
) -> Path:
    """One layer from the cache, or built, verified and renamed into place."""
    if not force and store.is_complete(home, layer, key):
        progress(f"{layer}: cached {key[:12]}", 1.0)
        return store.layer_dir(home, layer, key)

    def verify(path: Path) -> None:
        progress(f"{layer}: verifying", None)
        _VERIFY[layer](path)

    return store.build_layer(home, layer, key, build, verify, replace=force)


def build_environment(
    name: str, home: Path, progress: Progress | None = None, force: bool = False
) -> EnvironmentImage:
    """Build (or find in the cache) the image for environment ``name`` under ``home``.

    ``progress(stage, fraction)`` is called at each step; ``fraction`` is the share of that
    stage done (0..1) or None when unknown. A cache hit does no subprocess work.
    """
    report = progress or _noop
    recipe = get_recipe(name)
    payload = payload_digest()
    rhash = recipe_hash(recipe, payload)
    edir = env_dir(home, name)
    if not force:
        hit = _load(home, edir)
        if hit is not None and hit.recipe_hash == rhash:
            report("cached", 1.0)
            return hit
    with store.lock(home):
        if not force:  # another builder may have finished while we waited for the lock
            hit = _load(home, edir)
            if hit is not None and hit.recipe_hash == rhash:
                report("cached", 1.0)
                return hit
        for stale in store.stale_temp_dirs(home):
            remove_tree(stale)
        started = time.monotonic()
        keys, kinfo = _build_layers(recipe, home, payload, force, report)
        edir.mkdir(parents=True, exist_ok=True)
        manifest: dict[str, Any] = {
            "name": name,
            "recipe_hash": rhash,
            "recipe": asdict(recipe),
            "payload": payload,
            "layers": asdict(keys),
            "kernel": kinfo,
            "created": time.time(),
        }
        image = _materialise(home, edir, manifest)
        report(f"ready in {time.monotonic() - started:.1f}s", 1.0)
        return image


def _materialise(home: Path, edir: Path, manifest: dict[str, Any]) -> EnvironmentImage:
    """Write the environment manifest (with the resolved paths, for humans) and load it."""
    store.write_json_atomic(edir / store.MANIFEST, manifest)
    image = _load(home, edir)
    if image is None:
        raise ImageBuildError(f"environment manifest in {edir} is unusable", "rebuild with --force")
    listing = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(image).items()}
    store.write_json_atomic(edir / store.MANIFEST, {**manifest, "image": listing})
    return image


def inspect_environment(home: Path, name: str) -> EnvironmentImage:
    """The built image of ``name``; raise if unknown, never built, or incomplete."""
    get_recipe(name)
    image = _load(home, env_dir(home, name))
    if image is None:
        raise ImageBuildError(
            f"environment '{name}' is not built in {home}",
            f"build it: python -m guest.image build {name} --home {home}",
        )
    return image


def list_environments(home: Path) -> list[EnvironmentImage]:
    """Every complete environment under ``home``, by name."""
    envs = home / "envs"
    found = [_load(home, d) for d in sorted(envs.iterdir())] if envs.is_dir() else []
    return sorted((e for e in found if e is not None), key=lambda e: e.name)


def needs_rebuild(home: Path, name: str) -> bool:
    """True if ``name`` is unbuilt or was built from another recipe or agent payload."""
    image = _load(home, env_dir(home, name))
    return image is None or image.recipe_hash != recipe_hash(get_recipe(name))


def prune(home: Path, keep: Iterable[Path] = ()) -> int:
    """Delete layers no environment references, and dead builds' temp dirs; bytes freed.

    ``keep``: files or directories still in use (e.g. a template's backing rootfs of an
    environment since rebuilt); a layer containing any of them survives.
    """
    kept = [Path(p).resolve() for p in keep]
    freed = 0
    with store.lock(home):
        referenced = store.referenced_dirs(home)
        doomed = list(store.stale_temp_dirs(home))
        for layer in store.LAYERS:
            parent = store.images_dir(home) / layer
            for path in sorted(parent.iterdir()) if parent.is_dir() else ():
                if path.name.startswith(store.TMP_PREFIX) or path in referenced:
                    continue
                resolved = path.resolve()
                if any(k == resolved or resolved in k.parents for k in kept):
                    continue
                doomed.append(path)
        for path in doomed:
            freed += disk_usage(path)
            remove_tree(path)
    return freed
