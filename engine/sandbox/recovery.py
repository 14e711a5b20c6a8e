"""After an engine restart: re-adopt live VMs, finish or undo what the dead engine was doing
(each -ing phase says what), then reap whatever no record claims (see ownership)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

from engine.config import Paths
from engine.errors import GroveError
from engine.fork.holes import Holes
from engine.net.network import Network
from engine.net.networks import Networks, closed
from engine.sandbox import ownership
from engine.sandbox.events import EventLog
from engine.sandbox.lifecycle import Lifecycle
from engine.sandbox.phase import LIVE, Phase
from engine.sandbox.vms import SandboxVms
from engine.store.db import Store
from engine.store.records import SandboxRecord, TemplatePhase
from engine.vmm import cmdline
from engine.vmm.vm import Vm

log = logging.getLogger(__name__)

ADOPT_AGENT_TIMEOUT = 10.0


class Recovery:
    def __init__(
        self,
        paths: Paths,
        store: Store,
        events: EventLog,
        vms: SandboxVms,
        lifecycle: Lifecycle,
        holes: Holes,
        networks: Networks,
    ) -> None:
        self._networks = networks
        self._paths = paths
        self._store = store
        self._events = events
        self._vms = vms
        self._lifecycle = lifecycle
        self._holes = holes

    async def recover(self) -> None:
        await self._reap_unfinished_templates()
        for record in self._vms.records():
            if record.phase not in LIVE:
                continue
            try:
                await self._recover_one(record)
            except Exception:  # one sandbox must not keep the engine from starting
                log.exception("recovering sandbox %s failed", record.id)
                with contextlib.suppress(Exception):
                    self._vms.release(record.id)
                    self._vms.set_phase(record, Phase.FAILED, error="recovery after restart failed")
        await ownership.reap(self._paths, ownership.claims(self._store, self._vms.pids()))
        # Namespaces, links, chains and slots no live VM owns go (a crash at any step of
        # making or removing one leaves its slot row).
        await self._networks.reconcile()
        # Holes a fork filled in a template file are given back even if the engine died first.
        for mem_path in {t.mem_path for t in self._store.list_templates()
                         if t.phase is TemplatePhase.READY}:  # fmt: skip
            self._holes.dig_later(mem_path, delay=0.0)

    async def _recover_one(self, record: SandboxRecord) -> None:
        if record.phase is Phase.CREATING:
            # Half-created when the engine died: nobody is waiting for it any more. Its QEMU,
            # if any, is reaped with everything else no record claims.
            self._vms.remove_files(record)
            self._store.delete_sandbox(record.id)
            log.info("reaped half-created sandbox %s", record.id)
            return
        if record.phase is Phase.TERMINATING:
            await self._lifecycle.finish_terminate(record)
            return
        vm = None
        if record.pid:
            vm = await Vm.adopt(
                self._vms.files(record.id), record.pid, record.pid_start, await self._net(record)
            )
        if record.phase in (Phase.STOPPING, Phase.STARTING):
            # Both end stopped: the disk is kept and a start boots from it again.
            if vm is not None:
                await vm.quit() if record.phase is Phase.STOPPING else await vm.kill()
            self._vms.remove_files_keep_disk(record)
            self._vms.set_phase(record, Phase.STOPPED, pid=None, pid_start=None)
            await self._events.emit(record.id, "stopped", reason="finished after restart")
            return
        if record.phase is Phase.RESETTING:
            await self._recover_reset(record, vm)
            return
        if vm is None:
            self._vms.remove_files_keep_disk(record)
            self._vms.set_phase(
                record, Phase.FAILED, error="the VM process died while the engine was down",
                pid=None,
            )  # fmt: skip
            await self._events.emit(record.id, "failed", reason="vm gone after engine restart")
            return
        await self._reconcile(record, vm)
        try:
            await vm.connect_agent(ADOPT_AGENT_TIMEOUT)
        except GroveError:
            await vm.kill()
            self._vms.set_phase(record, Phase.FAILED, error="agent unreachable after restart")
            return
        self._vms.supervise(record.id, vm)
        await self._events.emit(record.id, "adopted", pid=vm.pid)
        log.info("re-adopted sandbox %s (pid %s)", record.id, vm.pid)

    async def _net(self, record: SandboxRecord) -> Network:
        """The sandbox's network as the dead engine left it (closed if it cannot be found:
        reconcile then removes whatever is left of it)."""
        try:
            policy = self._networks.policy_of(record.network)
            return await self._networks.adopt(record.id, policy)
        except GroveError as exc:
            log.warning("network of %s not recovered: %s", record.id, exc.message)
            return closed()

    async def _recover_reset(self, record: SandboxRecord, vm: Vm | None) -> None:
        """A reset the dead engine began: its old state is already gone, so finish it."""
        if vm is not None:
            await vm.kill()
        target = self._store.get_template(record.reset_to or "")
        if target is None or target.phase is not TemplatePhase.READY:
            self._vms.remove_files_keep_disk(record)
            self._vms.set_phase(record, Phase.FAILED, error="reset interrupted; its target is gone")
            return
        try:
            await self._lifecycle.finish_reset(record, target)
        except Exception as exc:  # the record is FAILED by now
            log.warning("could not finish the reset of %s: %s", record.id, exc)
            return
        await self._events.emit(record.id, "reset", template=target.id, reason="after restart")
        log.info("finished the interrupted reset of %s", record.id)

    async def _reconcile(self, record: SandboxRecord, vm: Vm) -> None:
        """Make the record match the VM after an engine died mid-operation (e.g. a fork)."""
        actual = await vm.disk_file()
        if actual and actual != record.disk_path:
            # A capture froze the old layer; the sandbox now sits on it.
            frozen = [t for t in self._store.list_templates() if t.disk_path == record.disk_path]
            if frozen:
                record.disk_base = frozen[0].id
            log.info("sandbox %s writes %s, not %s: adopting it", record.id, actual,
                     record.disk_path)  # fmt: skip
            record.disk_path = actual
            self._store.update_sandbox(record.id, disk_path=actual, disk_base=record.disk_base)
        if await vm.status() in ("paused", "postmigrate", "finish-migrate"):
            # Stopped for a capture that never finished: a source always resumes.
            with contextlib.suppress(GroveError):
                await vm.qmp.execute("migrate_cancel")
            await vm.resume_after_migration()
            log.info("resumed sandbox %s left paused by an interrupted fork", record.id)
        if record.phase is Phase.PAUSED:
            self._vms.set_phase(record, Phase.RUNNING)

    async def _reap_unfinished_templates(self) -> None:
        """Captures the previous engine never finished: kill their loaders, drop their memory.
        GC after re-adoption decides whether their disk layers are still under a sandbox."""
        for template in self._store.list_templates():
            if template.phase is not TemplatePhase.BUILDING:
                continue
            self._store.update_template(template.id, phase=TemplatePhase.FAILED, name=None)
            if template.mem_base is not None:
                # A delta had no loader and no file of its own: its base's file is in use.
                shutil.rmtree(self._paths.template_dir(template.id), ignore_errors=True)
                for leftover in (self._paths.delta_stream, self._paths.delta_state):
                    leftover(template.id).unlink(missing_ok=True)
                log.info("reaped unfinished delta template %s", template.id)
                continue
            for pid in cmdline.pids_using(template.mem_path):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            Path(template.mem_path).unlink(missing_ok=True)
            log.info("reaped unfinished template %s", template.id)
