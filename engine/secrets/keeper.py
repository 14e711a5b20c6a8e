"""The engine's one owner of secret values: the vault's files and the redactor's view of them
change together, and a sandbox's or snapshot's secrets go with it."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from engine.agent.client import AgentClient, AgentError
from engine.errors import GroveError
from engine.secrets import spec
from engine.secrets.redact import Redactor
from engine.secrets.vault import Vault, shred

log = logging.getLogger(__name__)

#: Where a guest finds its secrets, one 0600 file each (/run is the guest's tmpfs).
GUEST_DIR = "/run/grove/secrets"
#: Before schema 5, a sandbox's secrets were one JSON file in its own directory.
_LEGACY_FILE = "secrets.json"


class SecretKeeper:
    def __init__(self, vault: Vault, redactor: Redactor) -> None:
        self._vault = vault
        self.redactor = redactor

    def load(self, owners: Iterable[str]) -> None:
        """After an engine start: redact what live owners hold; wipe what nothing owns."""
        live = set(owners)
        for owner in self._vault.owners():
            if owner in live:
                self.redactor.add(owner, self._vault.read(owner).values())
            else:
                log.info("wiping the secrets of %s: nothing owns them", owner)
                self._vault.wipe(owner)

    def adopt_legacy(self, owner: str, sandbox_dir: Path) -> dict[str, str]:
        """A sandbox made before the vault: its JSON file moves in; returns the digests."""
        legacy = sandbox_dir / _LEGACY_FILE
        if not legacy.is_file():
            return {}
        with contextlib.suppress(ValueError, OSError):
            values = {str(k): str(v) for k, v in json.loads(legacy.read_text()).items()}
            digests = self.put(owner, values)
            shred(legacy)
            return digests
        return {}

    def put(self, owner: str, values: dict[str, str]) -> dict[str, str]:
        spec.validate_values(values)
        digests = self._vault.put(owner, values)
        self.redactor.add(owner, values.values())
        return digests

    def copy(self, source: str, dest: str) -> dict[str, str]:
        values = self._vault.read(source)
        return self.put(dest, values) if values else {}

    def wipe(self, owner: str) -> None:
        self._vault.wipe(owner)
        self.redactor.drop(owner)

    def names(self, owner: str) -> list[str]:
        return sorted(self._vault.read(owner))

    def values(self, owner: str) -> dict[str, str]:
        return self._vault.read(owner)

    def env(self, owner: str, secret_env: Sequence[str]) -> dict[str, str]:
        """The variables one call asked for (--secret-env NAME[=VARIABLE]), with values."""
        if not secret_env:
            return {}
        values = self._vault.read(owner)
        wanted = spec.parse_secret_env(secret_env, values)
        return {variable: values[name] for variable, name in wanted.items()}

    async def install(self, owner: str, agent: AgentClient) -> None:
        """Write owner's secrets into its guest: GUEST_DIR/NAME, 0600, on tmpfs."""
        values = self._vault.read(owner)
        if not values:
            return
        try:
            made = await agent.run(
                ["sh", "-c", f"umask 077 && mkdir -p {GUEST_DIR} && chmod 0700 {GUEST_DIR}"],
                timeout_s=30,
            )
            if made.exit_code != 0:
                raise AgentError("secrets_failed", f"cannot make {GUEST_DIR} in the guest")
            for name, value in values.items():
                await agent.write_file(f"{GUEST_DIR}/{name}", value.encode(), mode=0o600)
        except AgentError as exc:
            raise GroveError(
                "secrets_failed",
                self.redactor.text(f"the guest did not take its secrets: {exc}"),
                "see 'grove logs ID'; the sandbox's guest agent must be reachable",
            ) from exc
