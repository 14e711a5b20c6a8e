"""Path-level filesystem diff of a sandbox against the state it came from.

The base side is a throwaway VM restored from the base template (the fork snapshot, the named
snapshot, or the environment template), so both sides are read through a real guest kernel:
no host-side filesystem code, no mounting. Stat manifests are compared first; only files whose
metadata differ are hashed, and small text files get a unified patch.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.agent.client import AgentClient
from engine.config import Paths
from engine.errors import GroveError, invalid
from engine.files.patch import unified
from engine.images import disks
from engine.sandbox.manager import Sandboxes
from engine.store.db import Store
from engine.store.records import TemplateRecord
from engine.vmm import cmdline
from engine.vmm.accel import Accelerator
from engine.vmm.vm import Vm, VmFiles

PATCH_LIMIT = 64 * 1024
_META = ("type", "size", "mode", "uid", "gid", "target")


@dataclass
class FileChange:
    path: str
    change: str  # added | modified | deleted
    kind: str  # file | dir | symlink | other
    old_size: int = 0
    new_size: int = 0
    old_sha256: str = ""
    new_sha256: str = ""
    patch: str = ""  # unified diff for small text files


@dataclass(frozen=True)
class Diff:
    sandbox: str
    against: str
    changes: list[FileChange]


@dataclass(frozen=True)
class DiffContext:
    """What a diff needs from the engine: the sandboxes, the store and how to start a VM."""

    sandboxes: Sandboxes
    store: Store
    paths: Paths
    accel: Accelerator


async def diff(engine: DiffContext, ref: str, against: str, paths: list[str]) -> Diff:
    record, vm = engine.sandboxes.live_vm(ref)
    assert vm.agent is not None
    if against:
        base = engine.sandboxes.snapshot_by_name(against)
    else:
        origin = record.origin or record.template_id or ""
        found = engine.store.get_template(origin)
        if found is None:
            raise GroveError(
                "snapshot_not_found",
                f"the state sandbox {record.id} came from is gone",
                "diff against a named snapshot with --against snapshot NAME",
            )
        base = found
    roots = paths or ["/"]
    for root in roots:
        if not root.startswith("/"):
            raise invalid(f"path '{root}' is not absolute", "pass paths like /etc or /root")
    base_vm = await _boot_base(engine, base)
    try:
        assert base_vm.agent is not None
        new_side, old_side = await asyncio.gather(
            _manifest(vm.agent, roots), _manifest(base_vm.agent, roots)
        )
        changes = await _compare(old_side, new_side, base_vm.agent, vm.agent)
    finally:
        await _drop_base(engine, base_vm)
    label = f"snapshot {base.name}" if base.name else f"parent state ({base.id})"
    return Diff(sandbox=record.id, against=label, changes=changes)


async def _boot_base(engine: DiffContext, base: TemplateRecord) -> Vm:
    tag = f"diff-{secrets.token_hex(3)}"
    paths = engine.paths
    files = VmFiles(paths.socket_dir / tag, paths.home / "tmp" / tag)
    files.log_dir.mkdir(parents=True, exist_ok=True)
    disk = files.log_dir / "disk.qcow2"
    await disks.create_overlay(disk, Path(base.disk_path))
    spec = cmdline.VmSpec(
        accel=engine.accel, vcpus=base.vcpus, mem_mib=base.mem_mib, mem_path=Path(base.mem_path),
        mem_shared=False, disk=disk, qmp_socket=files.qmp, ctl_socket=files.ctl,
        console_log=files.console, kernel=Path(base.boot["kernel"]),
        initrd=Path(base.boot["initrd"]), append=base.boot["append"], incoming=True,
        tag=paths.vm_tag(tag),
    )  # fmt: skip
    vm = await Vm.launch(spec, files)
    try:
        await vm.restore(Path(base.state_path))
        await vm.connect_agent(30.0)
    except BaseException:
        await _drop_base(engine, vm)
        raise
    return vm


async def _drop_base(engine: DiffContext, vm: Vm) -> None:
    await vm.kill()
    shutil.rmtree(vm.files.log_dir, ignore_errors=True)


async def _manifest(agent: AgentClient, roots: list[str]) -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for root in roots:
        for entry in await agent.fs_manifest(root, hash_files=False, one_file_system=True):
            path = "/" + str(Path(root.rstrip("/") or "/") / entry["path"]).lstrip("/")
            entries[path] = entry
    return entries


async def _contents(agent: AgentClient, paths: list[str]) -> dict[str, bytes]:
    return {p: await agent.read_file(p) for p in paths}


async def _hashes(agent: AgentClient, paths: list[str]) -> dict[str, str]:
    if not paths:
        return {}
    result = await agent.run(["sha256sum", "--", *paths])
    hashes: dict[str, str] = {}
    for line in result.stdout.decode(errors="replace").splitlines():
        digest, _, name = line.partition("  ")
        hashes[name] = digest
    return hashes


async def _compare(
    old: dict[str, dict[str, Any]],
    new: dict[str, dict[str, Any]],
    old_agent: AgentClient,
    new_agent: AgentClient,
) -> list[FileChange]:
    changes: list[FileChange] = []
    for path in sorted(new.keys() - old.keys()):
        e = new[path]
        changes.append(FileChange(path=path, change="added", kind=e["type"], new_size=e["size"]))
    for path in sorted(old.keys() - new.keys()):
        e = old[path]
        changes.append(FileChange(path=path, change="deleted", kind=e["type"], old_size=e["size"]))
    suspects = [
        p for p in sorted(old.keys() & new.keys())
        if any(old[p].get(k) != new[p].get(k) for k in _META)
        or (old[p]["type"] == "file" and old[p]["mtime_ns"] != new[p]["mtime_ns"])
    ]  # fmt: skip
    files = [p for p in suspects if new[p]["type"] == "file" and old[p]["type"] == "file"]
    small = [p for p in files if max(old[p]["size"], new[p]["size"]) <= PATCH_LIMIT]
    large = [p for p in files if p not in small]
    (old_small, new_small), (old_large, new_large) = await asyncio.gather(
        asyncio.gather(_contents(old_agent, small), _contents(new_agent, small)),
        asyncio.gather(_hashes(old_agent, large), _hashes(new_agent, large)),
    )
    for path in suspects:
        o, n = old[path], new[path]
        change = FileChange(
            path=path, change="modified", kind=n["type"], old_size=o["size"], new_size=n["size"]
        )
        if path in old_small:
            before, after = old_small[path], new_small[path]
            change.old_sha256 = hashlib.sha256(before).hexdigest()
            change.new_sha256 = hashlib.sha256(after).hexdigest()
            change.patch = unified(path, before, after)
        elif path in old_large:
            change.old_sha256, change.new_sha256 = old_large[path], new_large.get(path, "")
        same_content = change.old_sha256 == change.new_sha256
        same_meta = all(o.get(k) == n.get(k) for k in _META)
        if same_meta and (same_content or n["type"] != "file"):
            continue  # touched but identical: not a change
        changes.append(change)
    await _fill_whole(changes, "added", new_agent, new)
    await _fill_whole(changes, "deleted", old_agent, old)
    changes.sort(key=lambda c: c.path)
    return changes


async def _fill_whole(
    changes: list[FileChange], kind: str, agent: AgentClient, entries: dict[str, dict[str, Any]]
) -> None:
    """Hash every added (or deleted) file on the side that has it; a small text one gets a
    patch that creates (or removes) it, so the whole diff applies with 'grove patch'."""
    whole = [c for c in changes if c.change == kind and c.kind == "file"]
    small = [c.path for c in whole if entries[c.path]["size"] <= PATCH_LIMIT]
    contents = await _contents(agent, small)
    hashes = await _hashes(agent, [c.path for c in whole if c.path not in contents])
    for change in whole:
        data = contents.get(change.path)
        digest = (
            hashlib.sha256(data).hexdigest() if data is not None else hashes.get(change.path, "")
        )
        if kind == "added":
            change.new_sha256 = digest
            if data is not None:
                change.patch = unified(change.path, None, data)
        else:
            change.old_sha256 = digest
            if data is not None:
                change.patch = unified(change.path, data, None)
