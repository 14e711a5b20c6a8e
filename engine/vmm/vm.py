"""A running VM: its QEMU process, monitor and agent connections, and sockets, owned together."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.agent.client import AgentClient, AgentError
from engine.errors import GroveError
from engine.net.inert import InertNet
from engine.net.network import Network
from engine.vmm import cmdline
from engine.vmm.accel import Accelerator
from engine.vmm.process import QemuProcess
from engine.vmm.qmp import Qmp, QmpError, migration_caps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VmFiles:
    """Where one VM's sockets and logs live; removed together when the VM goes."""

    sock_dir: Path
    log_dir: Path

    @property
    def qmp(self) -> Path:
        return self.sock_dir / "qmp.sock"

    @property
    def ctl(self) -> Path:
        return self.sock_dir / "ctl.sock"

    @property
    def console(self) -> Path:
        return self.log_dir / "console.log"

    @property
    def qemu_log(self) -> Path:
        return self.log_dir / "qemu.log"

    def prepare(self) -> None:
        self.sock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for sock in (self.qmp, self.ctl):
            sock.unlink(missing_ok=True)

    def remove_sockets(self) -> None:
        for sock in (self.qmp, self.ctl):
            sock.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.sock_dir.rmdir()


def boot_spec(
    accel: Accelerator,
    vcpus: int,
    mem_mib: int,
    mem_path: Path,
    disk: Path,
    files: VmFiles,
    boot: dict[str, str],
    tag: str,
) -> cmdline.VmSpec:
    """A cold boot from a disk: its RAM is a shared file of its own (it may become a template)."""
    return cmdline.VmSpec(
        accel=accel,
        vcpus=vcpus,
        mem_mib=mem_mib,
        mem_path=mem_path,
        mem_shared=True,
        disk=disk,
        qmp_socket=files.qmp,
        ctl_socket=files.ctl,
        console_log=files.console,
        kernel=Path(boot["kernel"]),
        initrd=Path(boot["initrd"]),
        append=boot["append"],
        tag=tag,
    )


class Vm:
    """A VM owns its process, monitor, agent connection, sockets and its network (engine.net):
    kill() ends them all."""

    def __init__(self, files: VmFiles, process: QemuProcess, qmp: Qmp, net: Network) -> None:
        self.files = files
        self.process = process
        self.qmp = qmp
        self.net = net
        self.agent: AgentClient | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def launch(
        cls,
        spec: cmdline.VmSpec,
        files: VmFiles,
        background: bool = False,
        net: Network | None = None,
    ) -> Vm:
        """Start QEMU; background=True for a VM started ahead of need (see set_background).
        net: its network, owned by the VM from here on (none given: no network at all)."""
        net = net if net is not None else InertNet()
        try:
            files.prepare()
            netdev, fds = net.netdev()
            spec = dataclasses.replace(spec, netdev=netdev)
            process = QemuProcess.spawn(cmdline.build(spec), files.qemu_log, pass_fds=fds)
        except BaseException:
            await net.close()
            raise
        net.spawned()
        if background:
            process.set_background(True)
        try:
            qmp = await Qmp.connect(files.qmp, timeout=15.0)
        except BaseException:
            await process.kill()
            await net.close()
            raise
        net.bind(qmp)
        return cls(files, process, qmp, net)

    @classmethod
    async def adopt(cls, files: VmFiles, pid: int, start: int | None, net: Network) -> Vm | None:
        """A VM an earlier engine started; net: its network, found again (see engine.net)."""
        process = QemuProcess.adopt(pid, start, cmdline.qemu_binary())
        if process is None:
            await net.close()
            return None
        try:
            qmp = await Qmp.connect(files.qmp, timeout=3.0)
        except (GroveError, OSError, TimeoutError):
            # A monitor that will not talk cannot be driven: the VM is of no use to anyone.
            await process.kill()
            await net.close()
            return None
        net.bind(qmp)
        return cls(files, process, qmp, net)

    async def restore(self, state: Path, timeout: float = 60.0) -> None:
        """Load device state into a VM started with -incoming defer and run it.

        Waits for QEMU's MIGRATION event, not by polling its status: a poll every few ms keeps
        QEMU's monitor thread busy for the whole load. A stream that fails, or a QEMU that
        exits, fails at once instead of at the deadline.
        """
        if not state.is_file():
            raise GroveError(
                "restore_failed",
                f"snapshot state {state} is missing",
                "the snapshot is incomplete; take it again",
            )
        await self.qmp.execute(
            "migrate-set-capabilities", capabilities=migration_caps(x_ignore_shared=True)
        )
        await self.qmp.execute("migrate-incoming", uri=f"exec:cat {state}")
        status = await self.wait_incoming(timeout)
        if status in ("paused", "postmigrate"):
            await self.qmp.execute("cont")
        elif status != "running":
            raise GroveError(
                "restore_failed",
                f"VM did not resume from its snapshot (status {status})",
                f"see {self.files.qemu_log}",
            )

    async def connect_agent(self, timeout: float) -> AgentClient:
        try:
            self.agent = await AgentClient.connect(self.files.ctl, timeout=timeout)
        except AgentError as exc:
            raise GroveError(
                "agent_unreachable",
                f"guest agent did not answer: {exc}",
                f"see {self.files.console}",
            ) from exc
        return self.agent

    async def quiesce_and_stop(self) -> None:
        """Pause with no engine->agent frame half-delivered.

        A ping round trip right before `stop` means nothing is in flight on the channel. The
        connection stays open: the frozen agent then sits in a plain read, and a restored copy
        wakes on the first bytes its new engine sends instead of polling for a reconnect.
        """
        if self.agent is not None:
            with contextlib.suppress(AgentError):
                await self.agent.ping(timeout=10)
        await self.qmp.execute("stop")

    async def save(self, state: Path) -> None:
        """Pause and write device state (guest RAM stays in the shared memory file)."""
        await self.quiesce_and_stop()
        await self.qmp.execute(
            "migrate-set-capabilities", capabilities=migration_caps(x_ignore_shared=True)
        )
        tmp = state.with_suffix(".tmp")
        await self.qmp.execute("migrate", uri=f"exec:cat > {tmp}")
        await self.qmp.wait_migration()
        tmp.rename(state)
        if self.agent is not None:
            await self.agent.close()
            self.agent = None

    async def freeze_disk(self, new_top: Path) -> None:
        """Make the current disk layer read-only history and continue on a new empty layer."""
        args: dict[str, Any] = {
            "device": "d0",
            "snapshot-file": str(new_top),
            "format": "qcow2",
            "mode": "absolute-paths",
        }
        await self.qmp.execute("blockdev-snapshot-sync", **args)

    async def migrate_out(self, uri: str, ignore_shared: bool) -> None:
        # The default 128 MiB/s cap would make a full-RAM copy to the loader 4x slower.
        bandwidth: dict[str, Any] = {"max-bandwidth": 64 << 30}
        await self.qmp.execute("migrate-set-parameters", **bandwidth)
        await self.qmp.execute(
            "migrate-set-capabilities", capabilities=migration_caps(x_ignore_shared=ignore_shared)
        )
        await self.qmp.execute("migrate", uri=uri)
        await self.qmp.wait_migration()

    async def migrate_to_file(self, path: Path, ignore_shared: bool) -> None:
        """Migrate into a new file that QEMU writes itself (fd: migration: no pipe, no cat)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            await self.qmp.execute("getfd", fd=fd, fdname="grove-migration")
        finally:
            os.close(fd)  # QEMU holds its own copy now
        await self.migrate_out("fd:grove-migration", ignore_shared)

    async def migrate_in(self, uri: str, ignore_shared: bool) -> None:
        await self.qmp.execute(
            "migrate-set-capabilities", capabilities=migration_caps(x_ignore_shared=ignore_shared)
        )
        await self.qmp.execute("migrate-incoming", uri=uri)

    async def wait_incoming(self, timeout: float = 60.0) -> str:
        """Wait until an incoming migration has ended; return the run state it left.

        A failed load makes QEMU exit, which ends the wait at once (see Qmp.poll for why
        this asks rather than only waiting for events).
        """
        exited = asyncio.ensure_future(self.process.wait())
        status = "inmigrate"

        async def loaded() -> bool:
            nonlocal status
            status = str((await self.qmp.execute("query-status"))["status"])
            return status != "inmigrate"

        try:
            done = await self.qmp.poll(loaded, timeout, _incoming_event, stop=exited)
        except QmpError:
            if exited.done() or not self.process.alive():
                raise self._load_failed() from None
            raise
        finally:
            exited.cancel()
        if done:
            return status
        if not self.process.alive():
            raise self._load_failed()
        raise GroveError(
            "migration_timeout",
            f"snapshot load did not finish in {timeout:.0f} s",
            f"see {self.files.qemu_log}",
        )

    def _load_failed(self) -> GroveError:
        try:
            tail = self.files.qemu_log.read_text(errors="replace").strip().splitlines()[-2:]
        except OSError:
            tail = []
        return GroveError(
            "restore_failed",
            f"QEMU exited while loading the snapshot: {' / '.join(tail) or 'no output'}",
            f"see {self.files.qemu_log}",
        )

    async def disk_file(self) -> str | None:
        """The image file the VM writes now (the top of its disk chain)."""
        for block in await self.qmp.execute("query-block"):
            if block.get("device") == "d0" and "inserted" in block:
                return str(block["inserted"]["file"])
        return None

    async def status(self) -> str:
        return str((await self.qmp.execute("query-status"))["status"])

    async def pause(self) -> None:
        await self.qmp.execute("stop")

    async def resume(self) -> None:
        await self.qmp.execute("cont")

    async def resume_after_migration(self, timeout: float = 30.0) -> None:
        """cont, once QEMU has finished (or cancelled) an outgoing migration."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                await self.qmp.execute("cont")
                return
            except QmpError as exc:
                if "not finalized" not in exc.message or loop.time() > deadline:
                    raise
            await asyncio.sleep(0.005)

    async def quit(self, timeout: float = 5.0) -> None:
        """Graceful end: flush the guest's filesystems, then ask QEMU to exit."""
        if self.agent is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.agent.sync(), 10)
        with contextlib.suppress(Exception):
            await self.qmp.execute("quit", timeout=timeout)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), timeout)
        await self.kill()

    async def kill(self) -> None:
        """Immediate end; safe to call twice."""
        started = time.monotonic()
        if self.agent is not None:
            with contextlib.suppress(Exception):
                await self.agent.close()
            self.agent = None
        await self.process.kill()
        await self.qmp.close()
        await self.net.close()
        self.files.remove_sockets()
        log.debug("vm %s killed in %.1f ms", self.pid, (time.monotonic() - started) * 1000)


def _incoming_event(message: dict[str, Any]) -> bool:
    return message.get("event") in ("MIGRATION", "RESUME")
