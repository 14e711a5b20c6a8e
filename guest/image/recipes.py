"""What an environment is made of, and the cache keys derived from it.

An environment is three layers, each cached under its own key so a change rebuilds only
what depends on it:

* kernel    -- keyed by the concrete kernel package and version (download + extract, ~3 s)
* rootfs    -- keyed by suite, variant, packages and disk size (debootstrap, ~1 min)
* initramfs -- keyed by the kernel layer and the agent payload (pure Python, ~1 s)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from guest.image.errors import ImageBuildError
from guest.image.payload import payload_digest

# Bump when the builder changes what it produces for the same inputs (invalidates all layers).
BUILDER_VERSION = "1"
# Per-layer versions: bump one to rebuild only that layer.
KERNEL_LAYER_VERSION = "1"
ROOTFS_LAYER_VERSION = "1"
INITRAMFS_LAYER_VERSION = "1"

# Drivers the guest needs (microvm exposes virtio-mmio devices). Their dependencies are
# resolved from each module's own ``depends=`` field, so only leaves must be listed.
DEFAULT_MODULES: tuple[str, ...] = (
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "virtio_console",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_rng",
    "ext4",
)


@dataclass(frozen=True)
class EnvironmentRecipe:
    """Everything that determines an environment's image."""

    name: str
    suite: str
    packages: tuple[str, ...]
    variant: str = "minbase"
    kernel_package: str = "linux-image-cloud-amd64"
    modules: tuple[str, ...] = DEFAULT_MODULES
    # Virtual size of the root filesystem; the file is sparse and the qcow2 stores only data.
    disk_size_mib: int = 2048
    description: str = ""


@dataclass(frozen=True)
class KernelRef:
    """A concrete kernel package resolved from the recipe's meta package."""

    package: str
    version: str


@dataclass(frozen=True)
class LayerKeys:
    kernel: str
    rootfs: str
    initramfs: str


_BASE_PACKAGES = ("python3", "procps", "iproute2", "vim-tiny", "less", "bash", "coreutils")

RECIPES: dict[str, EnvironmentRecipe] = {
    r.name: r
    for r in (
        EnvironmentRecipe(
            name="debian:12",
            suite="bookworm",
            packages=_BASE_PACKAGES,
            description="Debian 12 (bookworm) minbase with Python 3.11",
        ),
    )
}


def known_environments() -> list[str]:
    """Names accepted by ``build_environment``."""
    return sorted(RECIPES)


def get_recipe(name: str) -> EnvironmentRecipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ImageBuildError(
            f"unknown environment '{name}'",
            "use one of: " + ", ".join(known_environments()),
        ) from None


def _sha(*parts: object) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _script_digest() -> str:
    """The init scripts are inputs of the initramfs layer, like the agent payload."""
    here = Path(__file__).parent
    return hashlib.sha256(
        (here / "init").read_bytes() + b"\0" + (here / "stage2.sh").read_bytes()
    ).hexdigest()


def recipe_hash(recipe: EnvironmentRecipe, payload: str | None = None) -> str:
    """Identity of a whole environment: recipe fields, builder version, agent payload.

    ``payload`` is a precomputed ``payload_digest()``; computed when omitted.
    """
    digest = payload if payload is not None else payload_digest()
    return _sha("env", BUILDER_VERSION, asdict(recipe), digest, _script_digest())


def kernel_key(recipe: EnvironmentRecipe, kernel: KernelRef) -> str:
    return _sha("kernel", BUILDER_VERSION, KERNEL_LAYER_VERSION, asdict(kernel), recipe.modules)


def rootfs_key(recipe: EnvironmentRecipe) -> str:
    # The mirror is deliberately not part of the key: any mirror serves the same suite.
    return _sha(
        "rootfs",
        BUILDER_VERSION,
        ROOTFS_LAYER_VERSION,
        recipe.suite,
        recipe.variant,
        sorted(recipe.packages),
        recipe.disk_size_mib,
    )


def initramfs_key(kernel_layer_key: str, payload: str) -> str:
    return _sha(
        "initramfs",
        BUILDER_VERSION,
        INITRAMFS_LAYER_VERSION,
        kernel_layer_key,
        payload,
        _script_digest(),
    )


def layer_keys(recipe: EnvironmentRecipe, kernel: KernelRef, payload: str) -> LayerKeys:
    """The three cache keys; only ``initramfs`` depends on the agent payload."""
    k = kernel_key(recipe, kernel)
    return LayerKeys(kernel=k, rootfs=rootfs_key(recipe), initramfs=initramfs_key(k, payload))
