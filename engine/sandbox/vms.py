"""The one owner of every sandbox's VM: its process, its files, and the phase written for it.

Every other part of the engine reaches a sandbox's VM through here, and every phase change goes
through ``set_phase`` and so through the transition table. A VM's exit that nobody asked for is
noticed here and turns the sandbox ``failed``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from engine.config import Paths
from engine.errors import GroveError, invalid
from engine.sandbox.events import EventLog
from engine.sandbox.phase import LIVE, Phase, check_transition
from engine.secrets.keeper import SecretKeeper
from engine.store.db import Store
from engine.store.records import SandboxRecord
from engine.vmm.vm import Vm, VmFiles

log = logging.getLogger(__name__)


class SandboxVms:
    def __init__(self, paths: Paths, store: Store, events: EventLog, secrets: SecretKeeper) -> None:
        self._paths = paths
        self._secrets = secrets
        self._store = store
        self._events = events
        self._vms: dict[str, Vm] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Sandboxes whose VM we are ending on purpose: their exit is not a failure.
        self._ending: set[str] = set()

    # lookup

    def get(self, ref: str) -> SandboxRecord:
        if not ref:
            raise invalid("no sandbox id given", "pass a sandbox id or name; see 'grove ps'")
        record = self._store.find_sandbox(ref)
        if record is None:
            raise GroveError(
                "sandbox_not_found",
                f"no sandbox with id or name '{ref}'",
                "list sandboxes with 'grove sandbox ls'",
            )
        return record

    def records(self, include_terminated: bool = False) -> list[SandboxRecord]:
        return self._store.list_sandboxes(include_terminated)

    def live_vm(self, ref: str) -> tuple[SandboxRecord, Vm]:
        record = self.get(ref)
        vm = self._vms.get(record.id)
        # PAUSED lasts about as long as a capture's pause (~150 ms): a request then waits in
        # the channel until the VM runs again, rather than failing.
        if record.phase not in (Phase.RUNNING, Phase.PAUSED) or vm is None or vm.agent is None:
            raise GroveError(
                "sandbox_not_running",
                f"sandbox {record.id} is {record.phase.value}, not running",
                not_running_remedy(record),
            )
        return record, vm

    def vm(self, sandbox_id: str) -> Vm | None:
        return self._vms.get(sandbox_id)

    def running_ids(self) -> list[str]:
        """Sandboxes this engine holds a VM for (read from memory, not the store)."""
        return list(self._vms)

    def pids(self) -> set[int]:
        return {vm.pid for vm in self._vms.values()}

    def lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    def files(self, sandbox_id: str) -> VmFiles:
        return VmFiles(self._paths.socket_dir / sandbox_id, self._paths.sandbox_dir(sandbox_id))

    # phase: the only writer

    def set_phase(self, record: SandboxRecord, phase: Phase, **fields: object) -> None:
        check_transition(record.id, record.phase, phase)
        record.phase = phase
        for key, value in fields.items():
            setattr(record, key, value)
        self._store.update_sandbox(record.id, phase=phase, **fields)

    # ownership of the VM

    def hold(self, sandbox_id: str, vm: Vm) -> None:
        """This VM is the sandbox's from now on (not yet supervised: it may still be loading)."""
        self._vms[sandbox_id] = vm

    def release(self, sandbox_id: str) -> Vm | None:
        """Let go of the VM without ending it (the caller does)."""
        return self._vms.pop(sandbox_id, None)

    def supervise(self, sandbox_id: str, vm: Vm) -> None:
        self._vms[sandbox_id] = vm
        self._watchers[sandbox_id] = asyncio.create_task(self._supervise(sandbox_id, vm))

    async def end(self, sandbox_id: str, graceful: bool) -> None:
        """End a sandbox's VM on purpose (its exit is then not reported as a failure)."""
        vm = self._vms.pop(sandbox_id, None)
        if vm is None:
            return
        self._ending.add(sandbox_id)
        try:
            await (vm.quit() if graceful else vm.kill())
        finally:
            self._ending.discard(sandbox_id)

    async def _supervise(self, sandbox_id: str, vm: Vm) -> None:
        await vm.process.wait()
        if sandbox_id in self._ending or self._vms.get(sandbox_id) is not vm:
            return
        self._vms.pop(sandbox_id, None)
        await vm.kill()
        record = self._store.get_sandbox(sandbox_id)
        if record is not None and record.phase in LIVE:
            self.set_phase(
                record, Phase.FAILED, error="the VM process exited unexpectedly", pid=None
            )
            await self._events.emit(sandbox_id, "failed", reason="vm exited")

    def close(self) -> None:
        for task in self._watchers.values():
            task.cancel()

    # files

    async def discard(self, record: SandboxRecord) -> None:
        """Undo a create completely: no process, socket, file or row remains."""
        vm = self._vms.pop(record.id, None)
        if vm is not None:
            await vm.kill()
        self.remove_files(record)
        self._store.delete_sandbox(record.id)

    def remove_files(self, record: SandboxRecord) -> None:
        self.drop_private_memory(record)
        self.drop_top_disk(record)
        self._secrets.wipe(record.id)  # zeroed, then unlinked
        shutil.rmtree(self._paths.sandbox_dir(record.id), ignore_errors=True)
        self.files(record.id).remove_sockets()

    def remove_files_keep_disk(self, record: SandboxRecord) -> None:
        self.drop_private_memory(record)
        self.files(record.id).remove_sockets()

    def drop_top_disk(self, record: SandboxRecord) -> None:
        """The sandbox's own writable layer; layers a snapshot froze belong to the snapshot."""
        if not record.disk_path:
            return
        frozen = {t.disk_path for t in self._store.list_templates()}
        if record.disk_path not in frozen:
            Path(record.disk_path).unlink(missing_ok=True)

    def drop_private_memory(self, record: SandboxRecord) -> None:
        # A cold-booted sandbox owns its memory file; a restored one maps its template's.
        own = self._paths.memory_dir / f"{record.id}.mem"
        own.unlink(missing_ok=True)


def not_running_remedy(record: SandboxRecord) -> str:
    if record.phase is Phase.STOPPED:
        return f"start it with 'grove sandbox start {record.id}'"
    if record.phase is Phase.TERMINATED:
        return "create a new one with 'grove sandbox create ENV'"
    if record.phase is Phase.FAILED:
        return f"see 'grove logs {record.id}', then terminate it"
    return "wait for it to be running; see 'grove sandbox ls'"
