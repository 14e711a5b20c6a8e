"""Shared fixtures: a private GROVE_HOME and a real engine booting real QEMU VMs.

Images are expensive to build (debootstrap), so the suite builds debian:12 once per machine into
an image cache (GROVE_TEST_IMAGE_CACHE, default /var/tmp/grove-test-images) and hard-links its
layers into each test's private home. Layers are content-keyed: a changed recipe or agent
rebuilds only what changed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
ENV = "debian:12"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


@dataclass
class Grove:
    """Runs the real `grove` CLI against one private home."""

    home: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 300, input: str | None = None) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "engine.cli.main", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, timeout: float = 300) -> Result:
        result = self.run(*args, timeout=timeout)
        assert result.code == 0, f"grove {' '.join(args)} failed: {result.err or result.out}"
        return result

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "engine.cli.main", *args],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def engine_pid(self) -> int | None:
        lock = self.home / "engine.lock"
        try:
            pid = int(lock.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if psutil.pid_exists(pid) else None

    def qemu_pids(self) -> list[int]:
        """QEMU processes that belong to this home (matched on their socket/file paths)."""
        marks = {str(self.home)}
        run = self.home / "run"
        marks.add(str(run))
        found = []
        for proc in psutil.process_iter(["name", "cmdline"]):
            try:
                cmd = " ".join(proc.info["cmdline"] or [])
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if "qemu-system" in cmd and any(m in cmd for m in marks):
                found.append(proc.pid)
        return found

    def memory_dir(self) -> Path:
        from engine.config import Paths

        return Paths(self.home).memory_dir


def image_cache() -> Path:
    cache = Path(os.environ.get("GROVE_TEST_IMAGE_CACHE", "/var/tmp/grove-test-images"))
    from guest.image.builder import build_environment

    def progress(stage: str, fraction: float | None) -> None:
        print(f"[image cache] {stage}", file=sys.stderr, flush=True)

    build_environment(ENV, cache, progress=progress)
    return cache


def _link_image_cache(home: Path) -> None:
    src = image_cache()
    for part in ("images", "envs"):
        if (src / part).is_dir():
            shutil.copytree(src / part, home / part, copy_function=_link_or_copy, symlinks=True)


def _link_or_copy(src: str, dst: str) -> object:
    try:
        os.link(src, dst)  # same filesystem: instant, and the cache stays untouched by reads
        return dst
    except OSError:
        return shutil.copy2(src, dst)


def make_grove(prefix: str) -> Grove:
    # Short path: per-VM unix sockets must fit in sun_path.
    home = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    _link_image_cache(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROVE_")}
    env["GROVE_HOME"] = str(home)
    # Forks give back copied zero pages after this many idle seconds (default 20): tests that
    # measure memory should not wait that long.
    env["GROVE_DIG_DELAY"] = "1"
    env["PYTHONPATH"] = str(REPO)
    return Grove(home, env)


def teardown_grove(grove: Grove) -> None:
    """Stop the engine, then prove nothing of this home is left running or mounted."""
    grove.run("engine", "stop", timeout=180)
    pid = grove.engine_pid()
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
    leftovers = grove.qemu_pids()
    for qpid in leftovers:
        os.kill(qpid, signal.SIGKILL)
    mem_dir = grove.memory_dir()
    shutil.rmtree(mem_dir, ignore_errors=True)
    shutil.rmtree(grove.home, ignore_errors=True)
    assert not leftovers, f"QEMU processes left behind: {leftovers}"


@pytest.fixture(scope="session")
def grove() -> Iterator[Grove]:
    """One engine for the session, with debian:12 pulled and its template booted."""
    g = make_grove("gt")
    started = time.monotonic()
    g.ok("env", "pull", ENV, timeout=1800)
    print(f"\n[grove fixture] debian:12 ready in {time.monotonic() - started:.1f} s")
    yield g
    teardown_grove(g)


@pytest.fixture
def fresh_grove() -> Iterator[Grove]:
    """A second, private engine for tests that kill or break it."""
    g = make_grove("gf")
    yield g
    teardown_grove(g)


@pytest.fixture
def sandbox(grove: Grove) -> Iterator[str]:
    sid = grove.ok("sandbox", "create", ENV).out.strip()
    yield sid
    grove.run("sandbox", "terminate", sid)
