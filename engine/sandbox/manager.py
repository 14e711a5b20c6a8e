"""Sandboxes: the engine's one entry point to sandboxes, wired from parts of one concern each.

- ``vms.SandboxVms``: the one owner of every sandbox's VM, files and phase writes;
- ``restore.Restorer``: a QEMU restored from a frozen template, with its own identity;
- ``lifecycle.Lifecycle``: create, exec, stop/start, reset, terminate;
- ``engine.fork.transaction.Forks``: fork and snapshot, as steps with undos;
- ``engine.fork.collector.Collector``: snapshots by name, and garbage collection;
- ``recovery.Recovery``: what a restarted engine finishes, undoes and reaps;
- ``reaper.Reaper``: TTLs, and the one timer that terminates each sandbox when its time is up;
- ``pool.WarmPool`` and ``engine.fork.loaders.LoaderPool``: VMs started ahead of need.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from engine import crashpoints
from engine.agent.client import ExecHandle
from engine.config import Paths
from engine.errors import GroveError
from engine.fork.collector import Collector
from engine.fork.holes import Holes
from engine.fork.loaders import LoaderPool
from engine.fork.transaction import Forked, Forks
from engine.images import environments
from engine.images.templates import Templates
from engine.net.networks import Networks
from engine.net.status import NetworkInfo
from engine.sandbox import ownership, pool, ttl
from engine.sandbox.events import SNAPSHOTS, EventLog
from engine.sandbox.lifecycle import Lifecycle
from engine.sandbox.network import SandboxNetworks
from engine.sandbox.phase import Phase
from engine.sandbox.reaper import Reaper
from engine.sandbox.recovery import Recovery
from engine.sandbox.restore import Restorer
from engine.sandbox.vms import SandboxVms
from engine.secrets.keeper import SecretKeeper
from engine.store.db import Store
from engine.store.records import SandboxRecord, TemplatePhase, TemplateRecord
from engine.vmm.accel import Accelerator
from engine.vmm.vm import Vm


class Sandboxes:
    def __init__(
        self,
        paths: Paths,
        store: Store,
        accel: Accelerator,
        templates: Templates,
        events: EventLog,
        load_image: Callable[[str], asyncio.Task[environments.EnvironmentImage]],
        secrets: SecretKeeper,
    ) -> None:
        self._paths = paths
        self._secrets = secrets
        self._store = store
        self._events = events
        self._vms = SandboxVms(paths, store, events, secrets)
        self._networks = Networks(paths, store)
        self._pool = pool.WarmPool(paths, accel, self._networks)
        self._loaders = LoaderPool(paths, accel, self._networks)
        self._holes = Holes()
        self._collector = Collector(paths, store, templates, self._pool, secrets)
        restorer = Restorer(paths, store, accel, self._vms, self._pool, self._networks)
        self._lifecycle = Lifecycle(
            paths, store, accel, templates, events, load_image, self._vms, restorer,
            self._collector, self._networks, secrets,
        )  # fmt: skip
        self._forks = Forks(
            paths, store, accel, events, self._vms, restorer, self._loaders, self._holes,
            self._collector, self._networks, secrets,
        )  # fmt: skip
        self._recovery = Recovery(
            paths, store, events, self._vms, self._lifecycle, self._holes, self._networks
        )
        self._network = SandboxNetworks(store, self._vms, self._networks, events)
        # Expiry terminates through self.terminate, as 'grove sandbox terminate' does.
        self._reaper = Reaper(store, self.terminate, events, ttl.default_from_env())

    # lookup

    def get(self, ref: str) -> SandboxRecord:
        return self._vms.get(ref)

    def records(self, include_terminated: bool = False) -> list[SandboxRecord]:
        return self._vms.records(include_terminated)

    def live_vm(self, ref: str) -> tuple[SandboxRecord, Vm]:
        return self._vms.live_vm(ref)

    def vm(self, sandbox_id: str) -> Vm | None:
        return self._vms.vm(sandbox_id)

    def running_ids(self) -> list[str]:
        return self._vms.running_ids()

    def running_count(self) -> int:
        return len(self._vms.running_ids())

    # lifecycle

    async def create(
        self,
        environment: str,
        name: str = "",
        vcpus: int = 0,
        mem_mib: int = 0,
        secrets: dict[str, str] | None = None,
        from_snapshot: str = "",
        network: str = "",
        ttl_s: float | None = None,
    ) -> SandboxRecord:
        """network: a policy (engine.net.policy); empty for the engine's default. ttl_s:
        seconds it may live once running (None: the engine's default; 0: no limit)."""
        record = await self._lifecycle.create(
            environment, name, vcpus, mem_mib, secrets, from_snapshot, network
        )
        record.expires_at = await self._reaper.apply(record.id, ttl_s)
        return record

    async def exec(
        self,
        ref: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        timeout_s: float | None = None,
        stdin: bool = False,
        secret_env: list[str] | None = None,
    ) -> tuple[SandboxRecord, ExecHandle]:
        return await self._lifecycle.exec(ref, argv, env, cwd, timeout_s, stdin, secret_env)

    async def exec_ended(self, sandbox_id: str, exit_code: int | None, duration_ms: float) -> None:
        await self._lifecycle.exec_ended(sandbox_id, exit_code, duration_ms)

    async def ping(self, ref: str) -> float:
        return await self._lifecycle.ping(ref)

    async def stop(self, ref: str) -> SandboxRecord:
        return await self._lifecycle.stop(ref)

    async def start(self, ref: str) -> SandboxRecord:
        return await self._lifecycle.start(ref)

    async def terminate(self, ref: str) -> SandboxRecord:
        try:
            return await self._lifecycle.terminate(ref)
        finally:
            self._reaper.arm()  # the timer may have been armed for this one

    async def terminate_all(self) -> list[SandboxRecord]:
        try:
            return await self._lifecycle.terminate_all()
        finally:
            self._reaper.arm()

    async def set_ttl(self, ref: str, ttl_s: float | None) -> SandboxRecord:
        """Expire the sandbox ttl_s seconds from now; None: never."""
        record = self._vms.get(ref)
        if record.phase is Phase.TERMINATED:
            raise GroveError(
                "already_terminated", f"sandbox {record.id} is already terminated",
                "list live sandboxes with 'grove sandbox ls'",
            )  # fmt: skip
        record.expires_at = await self._reaper.set_ttl(record.id, ttl_s)
        return record

    async def reset(self, ref: str, snapshot_name: str = "") -> SandboxRecord:
        return await self._lifecycle.reset(ref, snapshot_name)

    # fork and snapshots

    async def fork(
        self,
        ref: str,
        replicas: int = 1,
        name_prefix: str = "",
        allow_secrets: bool = False,
        network: str = "",
        memory: str = "",
        ttl_s: float | None = None,
    ) -> Forked:
        """network: the children's policy; empty: each inherits the source's. memory: the
        layout (engine.fork.transaction.LAYOUTS); empty: the engine's default. ttl_s: the
        children's TTL (None: the engine's default, not the source's; 0: none)."""
        forked = await self._forks.fork(ref, replicas, name_prefix, allow_secrets, network, memory)
        for child in forked.children:
            child.expires_at = await self._reaper.apply(child.id, ttl_s)
        return forked

    # network

    def network_info(self, ref: str) -> NetworkInfo:
        return self._network.info(self._vms.get(ref))

    async def network_hint(self, sandbox_id: str) -> str:
        """After a failed command: what the sandbox's policy blocked ('' for nothing)."""
        return await self._network.blocked_hint(sandbox_id)

    async def set_network(self, ref: str, policy: str) -> NetworkInfo:
        """Change a sandbox's policy; a running one has it applied live."""
        return await self._network.change(ref, policy)

    @property
    def network_backend(self) -> str:
        """'namespace' or 'user' (see engine.net)."""
        return self._networks.backend

    @property
    def network_default(self) -> str:
        return str(self._networks.default_policy)

    async def snapshot(self, ref: str, name: str) -> TemplateRecord:
        return await self._forks.snapshot(ref, name)

    def ram_state_of(self, template_id: str | None) -> str:
        """Where a delta template keeps its state on tmpfs (guest RAM no process maps), or ''.
        Derived from the id, not read from the store: the meter asks every sample, and a
        template that is no delta has no such file (the meter skips what it cannot stat)."""
        return str(self._paths.delta_state(template_id)) if template_id else ""

    def snapshot_by_name(self, name: str) -> TemplateRecord:
        return self._collector.snapshot_by_name(name)

    def snapshots(self, source: str = "") -> list[TemplateRecord]:
        return self._collector.snapshots(self.get(source).id if source else "")

    def snapshot_dependents(self, template_id: str) -> list[str]:
        return self._collector.dependents(template_id)

    def delete_snapshot(self, name: str) -> TemplateRecord:
        deleted = self._collector.delete_snapshot(name)
        self._events.notify(SNAPSHOTS)  # no sandbox event says so; lineage watchers must know
        return deleted

    def collect_garbage(self) -> list[str]:
        return self._collector.collect()

    async def release_template(self, template_id: str) -> None:
        await self._collector.release_template(template_id)

    # engine start and stop

    async def recover(self) -> None:
        await self._recovery.recover()
        self._load_secrets()
        # After recovery: what expired while no engine ran is reaped now, then the timer armed.
        await self._reaper.start()

    def _load_secrets(self) -> None:
        """Redact what live sandboxes and snapshots hold; wipe secrets nothing owns."""
        owners = []
        for record in self._vms.records():
            if record.secrets and not record.secret_digests:
                digests = self._secrets.adopt_legacy(record.id, self._paths.sandbox_dir(record.id))
                if digests:
                    self._store.update_sandbox(record.id, secret_digests=digests)
            owners.append(record.id)
        ready = (t for t in self._store.list_templates() if t.phase is TemplatePhase.READY)
        owners += [t.id for t in ready if t.secret_digests]
        self._secrets.load(owners)

    async def shutdown(self) -> None:
        """Engine stop: every VM is stopped cleanly; disks are kept, nothing is orphaned, and
        template files give back the holes forks filled."""
        await self._reaper.close()  # before the stops: nothing expires during shutdown
        for n, sandbox_id in enumerate(self._vms.running_ids()):
            if n == 1:
                crashpoints.reached("shutdown.stopping")
            if self._store.get_sandbox(sandbox_id) is None:
                continue
            with contextlib.suppress(Exception):
                await self._lifecycle.stop(sandbox_id)
        self._vms.close()
        await self._pool.close()
        await self._loaders.close()
        await ownership.reap(self._paths, ownership.claims(self._store, set()))
        await self._networks.close()
        ready = [t for t in self._store.list_templates() if t.phase is TemplatePhase.READY]
        await self._holes.dig_now(sorted({t.mem_path for t in ready}))
