"""The fork transaction's undo stack, against fake VMs: a failure at any step leaves no child,
no loader and no usable template behind, and the source running. (The real thing, with QEMU
and crashes between the steps, is tests/test_crash_points.py.)"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.config import Paths
from engine.errors import GroveError
from engine.fork import capture
from engine.fork.collector import Collector
from engine.fork.transaction import Forks
from engine.sandbox.events import EventLog
from engine.sandbox.phase import Phase
from engine.sandbox.vms import SandboxVms
from engine.secrets.keeper import SecretKeeper
from engine.secrets.redact import Redactor
from engine.secrets.vault import Vault
from engine.store.db import Store
from engine.store.records import SandboxRecord, TemplatePhase, TemplateRecord
from engine.vmm.accel import Accelerator


class Boom(Exception):
    pass


@dataclass
class FakeProcess:
    pid: int
    start: int = 1


@dataclass
class FakeVm:
    """Enough of a Vm for the transaction: it is killed or it is not."""

    pid: int
    killed: bool = False
    agent: object = field(default_factory=object)

    @property
    def process(self) -> FakeProcess:
        return FakeProcess(self.pid)

    async def kill(self) -> None:
        self.killed = True


@dataclass
class World:
    paths: Paths
    store: Store
    vms: SandboxVms
    forks: Forks
    source: SandboxRecord
    fail_at: str
    made: list[FakeVm] = field(default_factory=list)
    source_phases: list[Phase] = field(default_factory=list)

    def vm(self) -> FakeVm:
        made = FakeVm(pid=10_000 + len(self.made))
        self.made.append(made)
        return made


class FakeRestorer:
    def __init__(self, world: World) -> None:
        self.w = world

    def new_disk(self, sandbox_id: str) -> Path:
        return self.w.paths.disks / f"{sandbox_id}-0.qcow2"

    async def launch_target(
        self, record: SandboxRecord, template: TemplateRecord, backing: Path, disk: Path
    ) -> Any:
        if self.w.fail_at == "launch" and len(self.w.made) >= 2:
            raise Boom("launch")
        vm = self.w.vm()
        self.w.vms.hold(record.id, vm)  # type: ignore[arg-type]
        record.disk_path = str(disk)
        return vm

    async def complete(self, record: SandboxRecord, vm: Any, state: Path) -> None:
        if self.w.fail_at == "restore":
            raise Boom("restore")
        self.w.vms.set_phase(record, Phase.RUNNING)


class Nothing:
    """Loaders, holes, templates and pool: no work to fake beyond being called."""

    def take(self, key: object) -> None:
        return None

    def refill(self, *args: object) -> None:
        return None

    async def fill(self, path: str) -> None:
        return None

    def dig_later(self, path: str, delay: float = 0.0) -> None:
        return None

    def remove(self, template: object) -> None:
        return None

    async def drop(self, template_id: str) -> None:
        return None

    def for_loader(self) -> None:
        return None

    def policy_of(self, text: str) -> str:
        return text


def build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str) -> World:
    monkeypatch.setenv("GROVE_MEM_DIR", str(tmp_path / "mem"))
    paths = Paths(tmp_path / "home")
    paths.ensure()
    store = Store(paths.database)
    events = EventLog(store)
    keeper = SecretKeeper(Vault(paths.secrets_dir), Redactor())
    vms = SandboxVms(paths, store, events, keeper)
    now = time.time()
    source = SandboxRecord(
        id="sb-source", name="src", environment="debian:12", phase=Phase.RUNNING, vcpus=1,
        mem_mib=128, created_at=now, updated_at=now, template_id="tpl-x",
        disk_path=str(paths.disks / "sb-source-0.qcow2"), mem_path="/nonexistent.mem",
        boot={"kernel": "k", "initrd": "i", "append": ""},
    )  # fmt: skip
    store.insert_sandbox(source)
    nothing = Nothing()
    collector = Collector(paths, store, nothing, nothing, keeper)  # type: ignore[arg-type]
    world = World(paths, store, vms, None, source, fail_at)  # type: ignore[arg-type]
    world.forks = Forks(
        paths, store, Accelerator("tcg", "test", "absent"), events, vms,
        FakeRestorer(world), nothing, nothing, collector, nothing, keeper,  # type: ignore[arg-type]
    )  # fmt: skip
    vms.hold(source.id, world.vm())  # type: ignore[arg-type]

    async def overlays(targets: list[Path], backing: Path, live: bool = False) -> None:
        for target in targets:
            target.write_bytes(b"")

    async def start_loader(
        paths: Paths, accel: Accelerator, src: SandboxRecord, net: object, template_id: str = ""
    ) -> capture.Loader:
        if fail_at == "loader":
            raise Boom("loader")
        mem = paths.memory_dir / f"{template_id}.mem"
        return capture.Loader(template_id, mem, world.vm(), tmp_path / "mig.sock",  # type: ignore[arg-type]
                              capture.loader_key(src))  # fmt: skip

    async def fake_capture(
        *, paths: Paths, loader: capture.Loader, source: SandboxRecord, source_vm: Any,
        name: str | None, on_paused: Any, on_resumed: Any,
    ) -> capture.Captured:  # fmt: skip
        await loader.vm.kill()  # a capture always ends its loader
        if fail_at == "capture":
            raise Boom("capture")
        new_top = paths.disks / "sb-source-1.qcow2"
        new_top.write_bytes(b"")
        on_paused(new_top)
        world.source_phases.append(world.store.get_sandbox(source.id).phase)  # type: ignore[union-attr]
        on_resumed()
        world.source_phases.append(world.store.get_sandbox(source.id).phase)  # type: ignore[union-attr]
        state = paths.template_dir(loader.template_id) / "state.bin"
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_bytes(b"state")
        record = TemplateRecord(
            id=loader.template_id, kind="snapshot", environment="debian:12", image_hash="",
            vcpus=1, mem_mib=128, phase=TemplatePhase.READY, mem_path=str(loader.mem),
            state_path=str(state), disk_path=str(paths.disks / "sb-source-0.qcow2"),
            created_at=time.time(), parent_id="tpl-x", source_sandbox=source.id, name=name,
        )  # fmt: skip
        return capture.Captured(record, paused_ms=1.0, total_ms=2.0)

    monkeypatch.setattr("engine.fork.transaction.disks.overlays", overlays)
    monkeypatch.setattr("engine.fork.transaction.capture.start_loader", start_loader)
    monkeypatch.setattr("engine.fork.transaction.capture.capture", fake_capture)
    return world


async def test_a_fork_that_succeeds_keeps_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = build(tmp_path, monkeypatch, fail_at="")
    forked = await w.forks.fork(w.source.id, replicas=3)
    assert [w.store.get_sandbox(c.id).phase for c in forked.children] == [Phase.RUNNING] * 3  # type: ignore[union-attr]
    template = w.store.get_template(forked.template.id)
    assert template is not None and template.phase is TemplatePhase.READY
    child_vms = [w.vms.vm(c.id) for c in forked.children]
    assert all(vm is not None and not vm.killed for vm in child_vms)  # type: ignore[attr-defined]
    assert w.store.get_sandbox(w.source.id).disk_base == template.id  # type: ignore[union-attr]
    # The source's row says paused exactly while QEMU holds it stopped, then running again.
    assert w.source_phases == [Phase.PAUSED, Phase.RUNNING]
    w.store.close()


@pytest.mark.parametrize("fail_at", ["loader", "launch", "capture", "restore"])
async def test_a_failed_step_undoes_every_step_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    w = build(tmp_path, monkeypatch, fail_at)
    with pytest.raises(Boom, match=fail_at):
        await w.forks.fork(w.source.id, replicas=3, name_prefix="kid")
    rows = w.store.list_sandboxes(include_terminated=True)
    assert [r.id for r in rows] == [w.source.id], "child rows were left behind"
    assert w.store.get_sandbox(w.source.id).phase is Phase.RUNNING  # type: ignore[union-attr]
    source_vm = w.made[0]
    assert not source_vm.killed, "the source's VM was ended"
    assert all(vm.killed for vm in w.made[1:]), "a child or loader VM was left running"
    assert not list(w.paths.sandboxes.iterdir()), "child directories were left behind"
    leftover_disks = {p.name for p in w.paths.disks.iterdir()} - {"sb-source-1.qcow2"}
    assert not leftover_disks, f"child disks were left behind: {leftover_disks}"
    for template in w.store.list_templates():
        # Only a template whose frozen layer the source now sits on may stay, as a layer.
        assert template.phase in (TemplatePhase.FAILED, TemplatePhase.LAYER), template
        assert w.store.get_sandbox(w.source.id).disk_base == template.id  # type: ignore[union-attr]
    assert not list(w.paths.memory_dir.glob("snap-*.mem")), "the new memory file was left"
    w.store.close()


async def test_a_layout_is_validated_and_a_delta_needs_a_template_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = build(tmp_path, monkeypatch, fail_at="")
    with pytest.raises(GroveError) as bad:
        await w.forks.fork(w.source.id, memory="half")
    assert bad.value.code == "invalid_argument" and "--memory" in bad.value.remedy
    # This source maps no template's file (as one booted cold): a delta is refused, before
    # anything is made, and auto falls back to a full copy.
    with pytest.raises(GroveError) as cold:
        await w.forks.fork(w.source.id, memory="delta")
    assert cold.value.code == "delta_unavailable" and "--memory full" in cold.value.remedy
    assert [s.id for s in w.store.list_sandboxes()] == [w.source.id]
    forked = await w.forks.fork(w.source.id)
    assert forked.memory == "full" and forked.template.mem_base is None
    w.store.close()
