"""The engine daemon: one asyncio process that owns every VM and serves the API on a unix socket."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from engine import __version__
from engine.agent.client import AgentClient
from engine.api.server import make_server
from engine.config import Paths
from engine.errors import GroveError
from engine.files import disk as offline_disk
from engine.files import limits as file_limits
from engine.files.live import LiveFiles
from engine.files.offline import OfflineFiles
from engine.fork import fsdiff, lineage
from engine.images import environments
from engine.images.catalog import EnvironmentCatalog
from engine.images.templates import Templates
from engine.metering.sampler import engine_sampler
from engine.sandbox import ttl
from engine.sandbox.events import EventLog
from engine.sandbox.manager import Sandboxes
from engine.secrets.keeper import SecretKeeper
from engine.secrets.redact import Redactor, install_log_filter
from engine.secrets.vault import Vault
from engine.sessions.runtime import GuestSessions
from engine.store.db import Store
from engine.vmm import accel as accel_probe
from guest.image import builder

log = logging.getLogger("grove.engine")


@dataclass(frozen=True)
class EngineStatus:
    pid: int
    socket: str
    accelerator: str
    accelerator_reason: str
    home: str
    version: str
    started_at: float
    sandboxes_running: int
    #: 'namespace' or 'user' (engine.net), and the policy a sandbox gets without one.
    network_backend: str
    network_default: str


class Engine:
    def __init__(self, paths: Paths, meter_interval: float | None = None) -> None:
        self.paths = paths
        self.started_at = time.time()
        self.accel = accel_probe.probe()
        self.store = Store(paths.database)
        # One redactor for everything the engine says: events, errors, its log, outputs.
        self.redactor = Redactor()
        self.secrets = SecretKeeper(Vault(paths.secrets_dir), self.redactor)
        self._undo_log_filter = install_log_filter(self.redactor)
        self.events = EventLog(self.store, self.redactor)
        self.templates = Templates(paths, self.store, self.accel)
        self.sandboxes = Sandboxes(
            paths, self.store, self.accel, self.templates, self.events, self._load_image,
            self.secrets,
        )  # fmt: skip
        self.environments = EnvironmentCatalog(
            paths, self.store, self.templates, self.sandboxes, self.events
        )
        self.meter = engine_sampler(self.sandboxes, meter_interval)
        self.sessions = GuestSessions(paths, self.store, self.sandboxes, self.events, self.secrets)
        self.files = LiveFiles(self._agent_of, file_limits.push_limit)
        self.disks = OfflineFiles(
            self.sandboxes.get, self.sandboxes.snapshot_by_name, paths.home / "tmp"
        )
        self._shutdown = asyncio.Event()

    def _agent_of(self, ref: str) -> tuple[str, AgentClient]:
        record, vm = self.sandboxes.live_vm(ref)
        assert vm.agent is not None
        return record.id, vm.agent

    def _load_image(self, name: str) -> asyncio.Task[environments.EnvironmentImage]:
        return self.environments.load_image(name)

    def status(self) -> EngineStatus:
        return EngineStatus(
            pid=os.getpid(),
            socket=str(self.paths.socket),
            accelerator=self.accel.name,
            accelerator_reason=self.accel.reason,
            home=str(self.paths.home),
            version=__version__,
            started_at=self.started_at,
            sandboxes_running=self.sandboxes.running_count(),
            network_backend=self.sandboxes.network_backend,
            network_default=self.sandboxes.network_default,
        )

    def lineage(self) -> list[lineage.Node]:
        envs = [e.name for e in builder.list_environments(self.paths.home)]
        return lineage.build(envs, self.store.list_templates(), self.store.list_sandboxes())

    async def diff(self, ref: str, against: str, paths: list[str]) -> fsdiff.Diff:
        context = fsdiff.DiffContext(self.sandboxes, self.store, self.paths, self.accel)
        return await fsdiff.diff(context, ref, against, paths)

    def request_shutdown(self) -> None:
        self._shutdown.set()

    # serving

    async def serve(self) -> None:
        # First: recovery empties tmp/, which a crashed engine's disk helpers and FUSE mounts
        # would keep busy (and a mountpoint cannot be removed).
        try:
            offline_disk.sweep_stale(self.paths.home / "tmp")
        except Exception:  # leftovers must not keep the engine from starting
            log.exception("sweeping offline disk leftovers failed")
        await self.sandboxes.recover()
        self.sandboxes.collect_garbage()
        self.meter.start()
        await self.sessions.start()
        server = make_server(self)
        sock = self.paths.socket
        sock.unlink(missing_ok=True)
        # Bind with a tight umask so the socket is never world-accessible, not even briefly.
        old = os.umask(0o177)
        try:
            server.add_insecure_port(f"unix:{sock}")
            await server.start()
        finally:
            os.umask(old)
        os.chmod(sock, 0o600)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._shutdown.set)
        log.info("engine %s serving on %s (%s)", os.getpid(), sock, self.accel.reason)
        await self._shutdown.wait()
        log.info("engine shutting down")
        await self.meter.stop()
        await self.sessions.stop()
        await self.sandboxes.shutdown()
        await server.stop(grace=1.0)
        sock.unlink(missing_ok=True)
        self.store.close()


def _lock(paths: Paths) -> IO[str]:
    handle = open(paths.lock, "a+")  # noqa: SIM115 - held for the daemon's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise GroveError(
            "engine_running",
            f"another engine already serves {paths.home}",
            "use 'grove engine status' or 'grove engine stop'",
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grove-engine")
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument(
        "--meter-interval",
        type=float,
        default=None,
        help="seconds between metering samples (default: GROVE_METER_INTERVAL or 1)",
    )
    args = parser.parse_args(argv)
    paths = Paths(args.home.absolute()) if args.home else Paths.from_env()
    paths.ensure()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.FileHandler(paths.log), logging.StreamHandler(sys.stderr)],
    )
    try:
        ttl.default_from_env()  # a bad GROVE_DEFAULT_TTL stops the engine now, not mid-create
    except GroveError as exc:
        # One line: a CLI whose engine did not start shows the log's last line.
        log.error("%s; remedy: %s", exc.message, exc.remedy)
        return 1
    try:
        lock = _lock(paths)
    except GroveError as exc:
        print(f"error: {exc.message}\n  remedy: {exc.remedy}", file=sys.stderr)
        return 1
    with contextlib.closing(lock):
        try:
            asyncio.run(Engine(paths, args.meter_interval).serve())
        except Exception:
            log.exception("engine failed")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
