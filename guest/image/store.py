"""The on-disk cache: immutable layer directories, built aside and renamed into place.

    <home>/images/<layer>/<key>/            one finished layer, never modified
    <home>/images/<layer>/<key>/manifest.json   written last: its presence means "complete"
    <home>/images/<layer>/.tmp-<key>-<pid>-<rand>/   a build in progress (or a dead one)
    <home>/images/.lock                     serialises builders and prune

A layer is only ever used through its final name, which appears by an atomic rename after
the layer was verified, so a crashed or failed build can never be picked up.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from guest.image.errors import ImageBuildError
from guest.image.fsutil import remove_tree

LAYERS = ("kernel", "rootfs", "initramfs")
MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"


def images_dir(home: Path) -> Path:
    return home / "images"


def layer_dir(home: Path, layer: str, key: str) -> Path:
    return images_dir(home) / layer / key


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of a finished directory, or None if absent or unreadable."""
    try:
        data = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def is_complete(home: Path, layer: str, key: str) -> bool:
    return read_manifest(layer_dir(home, layer, key)) is not None


@contextlib.contextmanager
def lock(home: Path) -> Iterator[None]:
    """Exclusive lock over the image store (one builder or pruner at a time)."""
    images_dir(home).mkdir(parents=True, exist_ok=True)
    with (images_dir(home) / ".lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _tmp_owner(name: str) -> int | None:
    """The pid encoded in a temp dir name, if any."""
    parts = name.split("-")
    try:
        return int(parts[-2])
    except (IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_temp_dirs(home: Path) -> list[Path]:
    """Temp dirs whose building process is gone (or that we cannot attribute)."""
    found: list[Path] = []
    for layer in LAYERS:
        parent = images_dir(home) / layer
        for path in parent.glob(f"{TMP_PREFIX}*") if parent.is_dir() else ():
            pid = _tmp_owner(path.name)
            if pid is None or pid == os.getpid() or not _alive(pid):
                found.append(path)
    return found


def build_layer(
    home: Path,
    layer: str,
    key: str,
    build: Callable[[Path], dict[str, Any]],
    verify: Callable[[Path], None],
    replace: bool = False,
) -> Path:
    """Build ``layer``/``key`` unless present (or ``replace``); return its final directory.

    ``build(tmpdir)`` fills a fresh temp dir and returns details for the manifest;
    ``verify(tmpdir)`` raises if the result is unusable. The caller holds ``lock(home)``.
    With ``replace`` a finished layer is swapped only once its successor is verified.
    """
    final = layer_dir(home, layer, key)
    if not replace and is_complete(home, layer, key):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(final, key)
    tmp.mkdir()
    started = time.time()
    try:
        details = build(tmp)
        verify(tmp)
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {
            "layer": layer,
            "key": key,
            "created": time.time(),
            "build_seconds": round(time.time() - started, 2),
            "files": files,
            "details": details,
        }
        write_json_atomic(tmp / MANIFEST, manifest)
        _fsync_tree(tmp)  # the manifest promises complete files, even after a power cut
        old = None
        if final.exists():  # a layer being replaced, or a leftover without a manifest
            old = _temp_name(final, key)
            # Renamed, not deleted in place: a QEMU holding its files open keeps running.
            final.rename(old)
        os.rename(tmp, final)
        if old is not None:
            remove_tree(old)
    except BaseException:
        remove_tree(tmp)
        raise
    if not is_complete(home, layer, key):
        raise ImageBuildError(f"{layer} layer {key[:12]} vanished after build", "retry")
    return final


def _fsync_tree(root: Path) -> None:
    for path in [*root.rglob("*"), root]:
        if path.is_symlink():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _temp_name(final: Path, key: str) -> Path:
    """A sibling of ``final`` that names this process, so prune can tell dead builds apart."""
    return final.parent / f"{TMP_PREFIX}{key[:16]}-{os.getpid()}-{secrets.token_hex(4)}"


def referenced_dirs(home: Path) -> set[Path]:
    """Layer directories named by any environment manifest."""
    refs: set[Path] = set()
    envs = home / "envs"
    for env in envs.iterdir() if envs.is_dir() else ():
        data = read_manifest(env)
        for layer in LAYERS:
            key = (data or {}).get("layers", {}).get(layer)
            if isinstance(key, str):
                refs.add(layer_dir(home, layer, key))
    return refs
