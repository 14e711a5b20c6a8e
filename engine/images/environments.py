"""Environments as the engine sees them: built (or found in cache) by guest.image, booted here."""

from __future__ import annotations

from engine.errors import GroveError
from guest.image import builder
from guest.image.builder import EnvironmentImage
from guest.image.errors import ImageBuildError
from guest.image.hostparams import kernel_cmdline
from guest.image.recipes import get_recipe, known_environments

__all__ = ["EnvironmentImage", "boot_args", "cached", "known_environments", "to_grove_error"]


def boot_args(image: EnvironmentImage, hostname: str) -> dict[str, str]:
    # tsc_early_khz/lpj in the command line: without them microvm under TCG hangs ~1 boot in 5.
    append = kernel_cmdline(hostname=hostname, hz=image.kernel_hz)
    return {"kernel": str(image.kernel), "initrd": str(image.initramfs), "append": append}


def describe(name: str) -> str:
    return get_recipe(name).description


def cached(home: str, name: str) -> EnvironmentImage | None:
    """The built image if it is complete and current; None when a pull is needed."""
    from pathlib import Path

    if builder.needs_rebuild(Path(home), name):
        return None
    try:
        return builder.inspect_environment(Path(home), name)
    except ImageBuildError:
        return None


def image_size(image: EnvironmentImage) -> int:
    return image.kernel_bytes + image.initramfs_bytes + image.rootfs_bytes


def to_grove_error(exc: ImageBuildError) -> GroveError:
    return GroveError("image_build_failed", str(exc.message), str(exc.remedy))


def unknown_environment(name: str) -> GroveError:
    return GroveError(
        "environment_not_found",
        f"unknown environment '{name}'",
        f"known environments: {', '.join(known_environments())}; see 'grove env list'",
    )


def validate_name(name: str) -> None:
    if name not in known_environments():
        raise unknown_environment(name)


def build(name: str, home: str, progress: builder.Progress | None, force: bool) -> EnvironmentImage:
    """Blocking: run in a worker thread."""
    from pathlib import Path

    validate_name(name)
    try:
        return builder.build_environment(name, Path(home), progress=progress, force=force)
    except ImageBuildError as exc:
        raise to_grove_error(exc) from exc
