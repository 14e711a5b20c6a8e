"""Shared fixtures: a private GROVE_HOME and a real engine booting real QEMU VMs.

Images are expensive to build (debootstrap), so the suite builds debian:12 once per machine into
an image cache (GROVE_TEST_IMAGE_CACHE, default /var/tmp/grove-test-images) and hard-links its
layers into each test's private home. Layers are content-keyed: a changed recipe or agent
rebuilds only what changed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pluggy
import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
ENV = "debian:12"
#: Where a failed VM test leaves its engine log, VM consoles and QEMU command lines.
RESULTS = REPO / "test-results"
#: Fixtures that boot VMs (or, for `built`, build the image they boot): their tests get `vm`.
VM_FIXTURES = frozenset({"grove", "fresh_grove", "sandbox", "built", "remote"})


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


def exited(pid: int) -> bool:
    """No such process, or a zombie: whoever inherited an orphan may be slow to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


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


#: Every home make_grove made whose engine has not been torn down yet.
LIVE_GROVES: list[Grove] = []


def make_grove(prefix: str) -> Grove:
    # Short path: per-VM unix sockets must fit in sun_path.
    home = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    _link_image_cache(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROVE_")}
    env["GROVE_HOME"] = str(home)
    env["PYTHONPATH"] = str(REPO)
    # Named hosts ('grove host') of the person running the tests stay out of them.
    env["XDG_CONFIG_HOME"] = str(home / "config")
    env.pop("SSH_AUTH_SOCK", None)
    grove = Grove(home, env)
    LIVE_GROVES.append(grove)
    return grove


def teardown_grove(grove: Grove) -> None:
    """Stop the engine, then prove nothing of this home is left running or mounted."""
    if grove in LIVE_GROVES:
        LIVE_GROVES.remove(grove)
    grove.run("engine", "stop", timeout=180)
    pid = grove.engine_pid()
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
    leftovers = grove.qemu_pids()
    for qpid in leftovers:
        os.kill(qpid, signal.SIGKILL)
    mem_dir = grove.memory_dir()
    shutil.rmtree(mem_dir, ignore_errors=True)
    shutil.rmtree(mem_dir.with_name(mem_dir.name + "-secrets"), ignore_errors=True)
    net_left = network_leftovers(grove.home)
    remove_network_leftovers(grove.home)
    shutil.rmtree(grove.home, ignore_errors=True)
    assert not leftovers, f"QEMU processes left behind: {leftovers}"
    assert not net_left, f"network state left behind: {net_left}"


def network_leftovers(home: Path) -> list[str]:
    """Namespaces, host links and the nftables table an engine of this home made."""
    from engine.config import Paths
    from engine.net.slots import home_tag

    tag = home_tag(Paths(home))
    found = [f"netns {p.name}" for p in _netns_dir().glob(f"grove-{tag}-*")]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [f"link {w.split('@')[0]}" for w in links.split() if w.startswith(f"gv{tag}-")]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    found += [f"nft {line}" for line in tables.splitlines() if line.endswith(f"grove_{tag}")]
    return found


def remove_network_leftovers(home: Path) -> None:
    from engine.config import Paths
    from engine.net.slots import home_tag

    tag = home_tag(Paths(home))
    for path in _netns_dir().glob(f"grove-{tag}-*"):
        subprocess.run(["ip", "netns", "delete", path.name], capture_output=True)
    subprocess.run(["nft", "delete", "table", "inet", f"grove_{tag}"], capture_output=True)


def _netns_dir() -> Path:
    return Path("/run/netns")


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


@pytest.fixture(scope="session")
def remote() -> Iterator[object]:
    """A second real engine behind a real OpenSSH server on 127.0.0.1 (see sshd.py)."""
    from sshd import remote_engine

    yield from remote_engine(True, make_grove, teardown_grove)


@pytest.fixture
def sandbox(grove: Grove) -> Iterator[str]:
    sid = grove.ok("sandbox", "create", ENV).out.strip()
    yield sid
    grove.run("sandbox", "terminate", sid)


# -- markers and failure artifacts -----------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a VM fixture, so `-m "not vm"` runs the rest in seconds."""
    for item in items:
        if VM_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.vm)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    outcome = yield
    report = outcome.get_result()
    # Setup or call: the engines still run, so their logs and QEMU processes are still there.
    if report.failed and report.when in ("setup", "call") and item.get_closest_marker("vm"):
        report.sections.append(("grove artifacts", save_artifacts(item)))


def _groves_of(item: pytest.Item) -> list[Grove]:
    """The homes the test used: its fixture values (or their .grove), and every live home."""
    values = list(getattr(item, "funcargs", {}).values())
    found: dict[Path, Grove] = {}
    for value in [*values, *LIVE_GROVES]:
        candidate = value if isinstance(value, Grove) else getattr(value, "grove", None)
        if isinstance(candidate, Grove):
            found.setdefault(candidate.home, candidate)
    return list(found.values())


def save_artifacts(item: pytest.Item) -> str:
    """Copy what explains a VM test's failure to test-results/<test>/; never raises."""
    try:
        groves = _groves_of(item)
        if not groves:
            return "no grove home to save"
        folder = RESULTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid).strip("_")[:180]
        shutil.rmtree(folder, ignore_errors=True)
        problems: list[str] = []
        for grove in groves:
            problems += _save_home(grove, folder / grove.home.name)
        note = "\n".join(f"  not saved: {p}" for p in problems)
        return f"saved to {folder}" + (f"\n{note}" if note else "")
    except Exception as exc:  # a report hook must not turn one failure into another
        return f"could not save artifacts: {exc!r}"


def _save_home(grove: Grove, dest: Path) -> list[str]:
    problems = []
    dest.mkdir(parents=True, exist_ok=True)
    wanted = [grove.home / "engine.log"]
    for root, _dirs, files in os.walk(grove.home):
        wanted += [Path(root) / f for f in files if f in ("console.log", "qemu.log")]
    for path in wanted:
        target = dest / path.relative_to(grove.home)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
    lines = []
    for pid in grove.qemu_pids():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        except OSError as exc:
            problems.append(f"/proc/{pid}/cmdline: {exc.strerror or exc}")
            continue
        lines.append(f"{pid}: " + shlex.join(a.decode(errors="replace") for a in argv))
    try:
        (dest / "qemu-cmdlines.txt").write_text("".join(f"{line}\n" for line in lines))
    except OSError as exc:
        problems.append(f"qemu-cmdlines.txt: {exc.strerror or exc}")
    return problems


# -- where the time goes ---------------------------------------------------------------------

_SPENT: dict[str, list[float]] = {}


def _kind(report: pytest.TestReport) -> str:
    tui = report.nodeid.startswith("tests/tui/")
    vm = "vm" in report.keywords
    if tui:
        return "dashboard tests (real engine)" if vm else "dashboard tests"
    return "VM tests" if vm else "unit tests"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    entry = _SPENT.setdefault(_kind(report), [0.0, 0])
    entry[0] += report.duration
    if report.when == "call":
        entry[1] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _SPENT:
        return
    terminalreporter.section("time by kind (setup, call and teardown)")
    for kind, (seconds, count) in sorted(_SPENT.items()):
        terminalreporter.write_line(f"{kind:32} {int(count):4} tests {seconds:8.1f} s")
