"""Guest images: a Debian kernel, an initramfs carrying the agent, and a Debian rootfs.

Build with ``build_environment("debian:12", home)``; the result names the three files QEMU
boots. Layers are cached under ``home/images`` so changing the agent rebuilds only the
initramfs. ``python -m guest.image`` is the manual entry point.
"""

from guest.image.builder import (
    EnvironmentImage,
    build_environment,
    inspect_environment,
    list_environments,
    needs_rebuild,
    prune,
)
from guest.image.errors import ImageBuildError
from guest.image.hosttools import REQUIRED_HOST_PACKAGES, missing_tools
from guest.image.recipes import EnvironmentRecipe, known_environments, recipe_hash

__all__ = [
    "REQUIRED_HOST_PACKAGES",
    "EnvironmentImage",
    "EnvironmentRecipe",
    "ImageBuildError",
    "build_environment",
    "inspect_environment",
    "known_environments",
    "list_environments",
    "missing_tools",
    "needs_rebuild",
    "prune",
    "recipe_hash",
]
