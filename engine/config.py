"""Where Grove keeps its state, and the knobs an operator may set through the environment."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_VCPUS = 1
DEFAULT_MEM_MIB = 512
MAX_VCPUS = 16
MIN_MEM_MIB = 128
MAX_MEM_MIB = 64 * 1024
#: The most past events a fresh inventory watch (WatchInventory) replays.
MAX_WATCH_REPLAY = 10_000
# A sun_path holds 108 bytes; leave room for the socket's own file name.
_MAX_SOCKET_DIR = 80


def default_home() -> Path:
    if "GROVE_HOME" in os.environ:
        return Path(os.environ["GROVE_HOME"]).expanduser().absolute()
    if os.geteuid() == 0:
        return Path("/var/lib/grove")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "grove"


@dataclass(frozen=True)
class Paths:
    """Every path the engine uses, derived from one home directory."""

    home: Path

    @classmethod
    def from_env(cls) -> Paths:
        return cls(default_home())

    @property
    def socket(self) -> Path:
        return self.home / "engine.sock"

    @property
    def database(self) -> Path:
        return self.home / "grove.db"

    @property
    def lock(self) -> Path:
        return self.home / "engine.lock"

    @property
    def log(self) -> Path:
        return self.home / "engine.log"

    @property
    def sandboxes(self) -> Path:
        return self.home / "sandboxes"

    @property
    def templates(self) -> Path:
        return self.home / "templates"

    @property
    def disks(self) -> Path:
        """Every qcow2 layer a sandbox or snapshot owns; layers outlive the sandbox that wrote
        them when a snapshot froze them, so they are not kept in a sandbox's own dir."""
        return self.home / "disks"

    def sandbox_dir(self, sandbox_id: str) -> Path:
        return self.sandboxes / sandbox_id

    def template_dir(self, template_id: str) -> Path:
        return self.templates / template_id

    @property
    def memory_dir(self) -> Path:
        """Guest RAM files live on tmpfs: shared template pages stay in host RAM, never on disk."""
        override = os.environ.get("GROVE_MEM_DIR")
        if override:
            return Path(override)
        shm = Path("/dev/shm")
        if shm.is_dir() and os.access(shm, os.W_OK):
            tag = hashlib.sha256(str(self.home).encode()).hexdigest()[:10]
            return shm / f"grove-{os.geteuid()}-{tag}"
        return self.home / "memory"

    def delta_stream(self, template_id: str) -> Path:
        """A delta capture's raw migration stream, while it is being reduced."""
        return self.memory_dir / f"{template_id}.stream"

    def delta_state(self, template_id: str) -> Path:
        """A delta template's reduced state: the source's own pages, guest RAM on tmpfs."""
        return self.memory_dir / f"{template_id}.state"

    @property
    def secrets_dir(self) -> Path:
        """Secret values (engine.secrets.vault) sit beside guest RAM on tmpfs: never on disk."""
        return self.memory_dir.with_name(self.memory_dir.name + "-secrets")

    @property
    def socket_dir(self) -> Path:
        """Per-VM unix sockets; moved to a short path when the home is too deep for sun_path."""
        run = self.home / "run"
        if len(str(run)) <= _MAX_SOCKET_DIR:
            return run
        tag = hashlib.sha256(str(self.home).encode()).hexdigest()[:10]
        return Path("/tmp") / f"grove-{os.geteuid()}-{tag}"

    @property
    def vm_tag_prefix(self) -> str:
        """Every QEMU this home's engine starts carries a tag with this prefix (-name)."""
        return "grove." + hashlib.sha256(str(self.home).encode()).hexdigest()[:10] + "."

    def vm_tag(self, owner: str) -> str:
        return self.vm_tag_prefix + owner

    def ensure(self) -> None:
        for path in (
            self.home,
            self.sandboxes,
            self.templates,
            self.disks,
            self.memory_dir,
            self.socket_dir,
        ):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.home, 0o700)
