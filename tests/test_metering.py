"""CoW-aware metering: the smaps parser on a captured QEMU smaps, the meter on real mappings,
and `grove top` on real VMs sharing one template (forks of one parent when fork exists)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import ENV, Grove
from waiting import wait_for

from engine.cli.top_cmd import COLUMNS, sort_column, sorted_rows
from engine.client.models import SandboxMeter
from engine.errors import GroveError
from engine.metering.cpu import MIN_WINDOW_S
from engine.metering.disk import ChainReader, backing_file
from engine.metering.filesystems import mounts
from engine.metering.meter import Meter, Target, mem_path_from_argv
from engine.metering.net import traffic
from engine.metering.sampler import Sampler, sandbox_source
from engine.metering.smaps import parse_smaps, parse_status
from engine.sandbox.phase import Phase
from engine.store.records import SandboxRecord

DATA = Path(__file__).parent / "data"
KIB = 1024
MIB = 1 << 20
# The guest-RAM file the captured process (a fork child that had written 64 MiB) maps.
CAPTURED_MEM = "/dev/shm/grove-0-30eb99572f/snap-58c7b4efc5.mem"


# -- smaps parser on a captured QEMU process -------------------------------------------------


def test_parses_captured_qemu_smaps() -> None:
    data = (DATA / "qemu_smaps_written.txt").read_bytes()
    memory = parse_smaps(data, CAPTURED_MEM)
    # Expected values were summed independently (awk over the same file).
    assert memory.rss_kib == 170756
    assert memory.private_kib == 117784
    assert memory.guest is not None
    assert memory.guest.rss_kib == 111516
    assert memory.guest.anon_kib == 74928
    assert memory.guest.private_kib == 81200
    assert not memory.guest.shared
    assert memory.vmm_overhead_kib == 117784 - 81200
    # The template pages it maps are exactly the shmem pages the kernel counts for it.
    status = parse_status((DATA / "qemu_status_written.txt").read_bytes())
    assert status.rss_kib == memory.rss_kib
    assert memory.guest.file_kib == status.shmem_kib


def test_tmpfs_trap_private_dirty_is_not_unique() -> None:
    """Template pages only this process maps are Private_Dirty on tmpfs, yet shared with the
    template: counting them as the sandbox's own would overstate it by 6 MiB here."""
    memory = parse_smaps((DATA / "qemu_smaps_written.txt").read_bytes(), CAPTURED_MEM)
    assert memory.guest is not None
    assert memory.guest.private_kib - memory.guest.anon_kib == 6272


def _vma(start: int, perms: str, path: str, rss: int, anon: int, private: int) -> str:
    return (
        f"{start:x}-{start + 0x1000:x} {perms} 00000000 00:1b 26    {path}\n"
        f"Size:               4 kB\nRss:             {rss} kB\nPss:             {rss} kB\n"
        f"Shared_Clean:          0 kB\nShared_Dirty:      {rss - private} kB\n"
        f"Private_Clean:         0 kB\nPrivate_Dirty:     {private} kB\n"
        f"Anonymous:       {anon} kB\nSwap:                  0 kB\nVmFlags: rd wr mr mw me\n"
    )


def test_parser_edges_split_deleted_shared_and_prefix() -> None:
    path = "/dev/shm/g/t.mem"
    text = (
        _vma(0x1000, "r-xp", "/usr/bin/qemu", 100, 0, 10)
        + _vma(0x10000, "rw-p", path, 300, 20, 40)
        + _vma(0x20000, "rw-p", path + " (deleted)", 50, 5, 5)  # unlinked, still mapped
        + _vma(0x30000, "rw-p", path + "2", 999, 999, 999)  # another file with that prefix
        + _vma(0x40000, "rw-p", "", 70, 70, 70)
    ).encode()
    memory = parse_smaps(text, path)
    assert memory.guest is not None
    assert (memory.guest.rss_kib, memory.guest.anon_kib, memory.guest.private_kib) == (350, 25, 45)
    assert memory.rss_kib == 100 + 350 + 999 + 70
    assert memory.vmm_overhead_kib == 10 + 999 + 70
    shared = parse_smaps(_vma(0x10000, "rw-s", path, 300, 0, 300).encode(), path)
    assert shared.guest is not None and shared.guest.shared
    assert parse_smaps(text, "/dev/shm/g/other.mem").guest is None


def test_mem_path_from_qemu_argv() -> None:
    argv = [
        "qemu",
        "-object",
        "memory-backend-file,id=mem,size=512M,mem-path=/a,,b/t.mem,share=off",
    ]
    assert mem_path_from_argv(argv) == "/a,b/t.mem"
    assert mem_path_from_argv(["qemu", "-m", "512M"]) is None


def test_mountinfo_types_and_escapes() -> None:
    text = (
        "22 1 0:21 / / rw - ext4 /dev/vda rw\n"
        "30 22 0:27 / /dev/shm rw,nosuid - tmpfs tmpfs rw\n"
        "31 22 0:28 / /mnt/with\\040space rw - tmpfs tmpfs rw\n"
    )
    assert mounts(text) == [("/", "ext4"), ("/dev/shm", "tmpfs"), ("/mnt/with space", "tmpfs")]


# -- qcow2 chains without qemu-img at sample time --------------------------------------------


def test_backing_chain_relative_and_absolute(tmp_path: Path) -> None:
    def qemu_img(*args: str) -> None:
        subprocess.run(["qemu-img", *args], check=True, capture_output=True)

    qemu_img("create", "-q", "-f", "qcow2", str(tmp_path / "base.qcow2"), "64M")
    (tmp_path / "sub").mkdir()
    # Relative backing names resolve against the directory of the image that names them.
    qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "../base.qcow2",
             str(tmp_path / "sub" / "mid.qcow2"))  # fmt: skip
    qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
             str(tmp_path / "sub" / "mid.qcow2"), str(tmp_path / "top.qcow2"))  # fmt: skip
    assert backing_file(str(tmp_path / "base.qcow2")) is None
    assert backing_file(str(tmp_path / "sub" / "mid.qcow2")) == str(tmp_path / "base.qcow2")
    top, layers = ChainReader().chain(str(tmp_path / "top.qcow2"))
    assert [layer.path for layer in layers] == [
        str(tmp_path / "sub" / "mid.qcow2"),
        str(tmp_path / "base.qcow2"),
    ]
    assert top.allocated_bytes == os.stat(tmp_path / "top.qcow2").st_blocks * 512
    assert all(layer.allocated_bytes > 0 for layer in layers)


# -- the meter on real MAP_PRIVATE mappings of one tmpfs file (no VM needed) ------------------

_MAPPER = """
import mmap, os, sys
path, write_pages = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
m = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
total = sum(m[i] for i in range(0, size, 4096))  # map every page: shared, resident
written = 0
def write(pages):
    global written
    for i in range(written, written + pages):
        m[i * 4096] = 7  # copy on write: this process's own page
    written += pages
write(write_pages)
print("ready", flush=True)
for line in sys.stdin:  # each line: write that many more pages
    write(int(line))
    print("ok", flush=True)
"""


@pytest.fixture
def template_file() -> Iterator[Path]:
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        pytest.skip("no writable /dev/shm")
    fd, name = tempfile.mkstemp(dir=shm, suffix=".mem")
    os.write(fd, b"\x01" * (8 * MIB))
    os.close(fd)
    yield Path(name)
    os.unlink(name)


def _mapper(path: Path, write_pages: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _MAPPER, str(path), str(write_pages)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_meter_counts_cow_copies_as_unique_and_the_template_once(template_file: Path) -> None:
    writer = _mapper(template_file, write_pages=512)  # 2 MiB of copies
    reader = _mapper(template_file, write_pages=0)
    try:
        targets = [
            Target("w", "w", "running", writer.pid, None, str(template_file)),
            Target("r", "r", "running", reader.pid, None, str(template_file)),
            Target("s", "s", "stopped"),
        ]
        meter = Meter()
        reading = meter.measure(targets)
        w, r, s = reading.sandboxes
        assert w.unique_mem_bytes == 2 * MIB
        assert w.shared_mem_bytes == 6 * MIB  # its copied pages no longer read the file
        assert r.unique_mem_bytes == 0 and r.shared_mem_bytes == 8 * MIB
        assert s.unique_mem_bytes is None and s.cpu_percent is None and s.rss_bytes is None
        host = reading.host
        assert host.template_mem_bytes == 8 * MIB  # once, though two processes map it
        assert host.naive_guest_mem_bytes == 16 * MIB
        assert host.cow_aware_guest_mem_bytes == 10 * MIB
        assert host.naive_mem_bytes == (w.rss_bytes or 0) + (r.rss_bytes or 0)
        assert host.cow_aware_mem_bytes == (
            2 * MIB + (w.vmm_overhead_bytes or 0) + (r.vmm_overhead_bytes or 0) + 8 * MIB
        )
        # A delta state on tmpfs (a fork's own pages, mapped by no process) is host RAM its
        # template holds: counted once, however many children restore from it.
        state = template_file.with_suffix(".state")
        state.write_bytes(b"\x02" * (3 * MIB))
        try:
            with_state = [dataclasses.replace(t, state_path=str(state)) for t in targets]
            assert meter.measure(with_state).host.template_mem_bytes == 11 * MIB
        finally:
            state.unlink()
        # The first sample has no CPU rate yet (one reading is no rate); the next one has, once
        # a long enough window has passed.
        assert w.cpu_percent is None
        time.sleep(MIN_WINDOW_S + 0.05)
        rate = meter.measure(targets).sandboxes[0].cpu_percent
        assert rate is not None and rate >= 0
    finally:
        for proc in (writer, reader):
            proc.kill()
            proc.wait()


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_meter_walks_then_reuses_then_scans_and_agrees_with_a_walk(template_file: Path) -> None:
    proc = _mapper(template_file, write_pages=0)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        meter = Meter()
        reference = Meter(max_walk_age_s=0)  # walks smaps every time
        targets = [Target("a", "a", "running", proc.pid, None, str(template_file))]
        # Once it sleeps in its stdin read, the mapper's memory counters stay put.
        wait_for(lambda: _state(proc.pid), 30, "the mapper to block in its stdin read",
                 ready=lambda state: state == "S", interval=0.02)  # fmt: skip
        meter.measure(targets)
        reuses = meter.reuses
        first = meter.measure(targets).sandboxes[0]
        assert meter.walks == 1 and meter.reuses == reuses + 1  # counters did not move
        assert first.unique_mem_bytes == 0
        scans = meter.scans
        proc.stdin.write("256\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "ok"
        scanned = meter.measure(targets).sandboxes[0]
        walked = reference.measure(targets).sandboxes[0]
        if meter.scanner is not None and meter.scanner.available:
            assert (meter.walks, meter.scans) == (1, scans + 1)  # counters moved: scan, no walk
        assert scanned.unique_mem_bytes == walked.unique_mem_bytes == MIB
        assert scanned.shared_mem_bytes == walked.shared_mem_bytes == 7 * MIB
        assert scanned.vmm_overhead_bytes == walked.vmm_overhead_bytes
        assert reference.walks == 1 and reference.reuses == 0
    finally:
        proc.kill()
        proc.wait()


def test_gone_process_is_no_datum(template_file: Path) -> None:
    proc = _mapper(template_file, write_pages=0)
    proc.kill()
    proc.wait()
    reading = Meter().measure([Target("a", "a", "running", proc.pid, None, str(template_file))])
    assert reading.sandboxes[0].unique_mem_bytes is None
    assert reading.host.sandboxes_running == 0


def _write_counters(root: Path, device: str, rx: str, tx: str) -> None:
    stats = root / device / "statistics"
    stats.mkdir(parents=True)
    (stats / "rx_bytes").write_text(rx + "\n")
    (stats / "tx_bytes").write_text(tx + "\n")


def test_net_counters_are_read_from_the_host_side_and_swapped(tmp_path: Path) -> None:
    # The host side transmits what the sandbox receives, and receives what it sends.
    _write_counters(tmp_path, "tap-1", rx="1200", tx="345678")
    assert traffic("tap-1", tmp_path) == (345678, 1200)
    _write_counters(tmp_path, "tap-2", rx="0", tx="0")
    assert traffic("tap-2", tmp_path) == (0, 0)  # a real zero stays a zero
    _write_counters(tmp_path, "tap-3", rx="garbage", tx="7")
    assert traffic("tap-3", tmp_path) == (7, None)  # an unreadable counter is no datum
    for missing in ("", "no-such-device", "../tap-1", ".", ".."):
        assert traffic(missing, tmp_path) == (None, None), missing


def test_net_counters_of_a_real_device() -> None:
    # The loopback device always exists; what it sends it receives.
    received, sent = traffic("lo")
    assert received is not None and sent is not None and received >= 0 and sent >= 0
    assert traffic("grove-none0") == (None, None)


def test_meter_reads_net_counters_of_live_sandboxes_only(template_file: Path) -> None:
    proc = _mapper(template_file, write_pages=0)
    try:
        targets = [
            Target("a", "a", "running", proc.pid, None, str(template_file), net_device="lo"),
            Target("b", "b", "running", proc.pid, None, str(template_file)),
            Target("c", "c", "running", proc.pid, None, str(template_file),
                   net_device="grove-none0"),
            Target("s", "s", "stopped", net_device="lo"),
        ]  # fmt: skip
        a, b, c, s = Meter().measure(targets).sandboxes
        assert a.net_rx_bytes is not None and a.net_tx_bytes is not None
        assert a.net_rx_bytes >= 0 and a.net_tx_bytes >= 0
        assert (b.net_rx_bytes, b.net_tx_bytes) == (None, None)  # no device: user mode
        assert (c.net_rx_bytes, c.net_tx_bytes) == (None, None)  # a device that went away
        assert (s.net_rx_bytes, s.net_tx_bytes) == (None, None)  # not running
        assert s.to_dict()["net_rx_bytes"] is None
    finally:
        proc.kill()
        proc.wait()


def test_sampler_source_takes_the_live_vms_host_device() -> None:
    def record(sid: str, phase: Phase) -> SandboxRecord:
        return SandboxRecord(sid, sid, ENV, phase, 1, 512, 0.0, 0.0)

    records = [record("a", Phase.RUNNING), record("b", Phase.STOPPED), record("c", Phase.RUNNING)]
    net = SimpleNamespace(host_device="grv-a")
    vms = {
        "a": SimpleNamespace(pid=1, process=SimpleNamespace(start=2), net=net, agent=None),
        "b": SimpleNamespace(pid=3, process=SimpleNamespace(start=4), net=net, agent=None),
        "c": SimpleNamespace(pid=5, process=SimpleNamespace(start=6), agent=None),  # no net
    }
    states = {"tpl-delta": "/dev/shm/x/tpl-delta.state"}
    records[0].template_id = "tpl-delta"
    sandboxes = SimpleNamespace(
        records=lambda include_terminated: records,
        vm=lambda sid: vms.get(sid),
        ram_state_of=lambda template_id: states.get(template_id or "", ""),
    )
    targets = [t for t, _ in sandbox_source(sandboxes)()]  # type: ignore[arg-type]
    assert [t.net_device for t in targets] == ["grv-a", "", ""]
    # A live sandbox's template state on tmpfs is measured with it; not for stopped ones.
    assert [t.state_path for t in targets] == ["/dev/shm/x/tpl-delta.state", "", ""]


def test_sampler_history_and_drop_oldest_subscribers() -> None:
    async def scenario() -> None:
        sampler = Sampler(lambda: [(Target("s", "s", "stopped"), None)], interval_s=0.1, history=3)
        with sampler.subscribe(maxsize=2) as sub:
            for _ in range(5):
                await sampler.sample_now()
            assert sub.queue.qsize() == 2 and sub.dropped == 3
            kept = [sub.queue.get_nowait().sampled_at for _ in range(2)]
        assert len(sampler.history("s")) == 3
        assert kept == [s.sampled_at for s in sampler.history("s")[-2:]]
        await sampler.stop()

    asyncio.run(scenario())


def test_sort_columns_validate() -> None:
    assert sort_column("cpu%").header == "CPU%"
    assert sort_column("cpu").header == "CPU%"
    assert sort_column("unique_mem").header == "UNIQUE-MEM"
    assert sort_column("Shared-Disk").header == "SHARED-DISK"
    assert sort_column("net").header == sort_column("net_tx").header == "NET RX/TX"
    with pytest.raises(GroveError) as err:
        sort_column("bogus")
    assert all(c.header in err.value.remedy for c in COLUMNS)


def test_top_net_column_is_a_pair_and_no_datum_is_a_dash() -> None:
    net = sort_column("NET RX/TX")
    assert net.cell(SandboxMeter("a", "a", "running")) == "-"
    assert net.cell(SandboxMeter("a", "a", "running", net_rx_bytes=0, net_tx_bytes=2048)) == (
        "0 B/2.0 KiB"
    )
    have = SandboxMeter("b", "b", "running", net_rx_bytes=5, net_tx_bytes=1)
    none = SandboxMeter("c", "c", "stopped")
    assert [r.id for r in sorted_rows([none, have], net)] == ["b", "c"]  # no datum last


# -- grove top on real VMs ------------------------------------------------------------------

SANDBOX_KEYS = {
    "id", "name", "unique_mem_bytes", "shared_mem_bytes", "vmm_overhead_bytes",
    "unique_disk_bytes", "shared_disk_bytes", "cpu_percent", "net_rx_bytes", "net_tx_bytes",
}  # fmt: skip
HOST_KEYS = {"naive_mem_bytes", "cow_aware_mem_bytes", "saved_mem_bytes"}


def top(grove: Grove, *args: str) -> dict[str, Any]:
    data = grove.ok("top", "--json", *args).json()
    assert isinstance(data, dict)
    assert {"sampled_at", "sandboxes", "host"} <= data.keys()
    assert data["host"].keys() >= HOST_KEYS
    for row in data["sandboxes"]:
        assert row.keys() >= SANDBOX_KEYS
    return data


def rows(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in data["sandboxes"]}


def fresh_top(grove: Grove, after: float, ready: Any = None, timeout: float = 60) -> dict[str, Any]:
    """The first sample taken after `after` (wall clock) for which ready(data) holds."""
    return wait_for(lambda: top(grove), timeout, f"a sample taken after {after:.3f} that fits",
                    ready=lambda d: d["sampled_at"] > after and (ready is None or ready(d)),
                    interval=0.3)  # fmt: skip


def fork_available(grove: Grove) -> bool:
    return grove.run("sandbox", "fork", "--help").code == 0


@pytest.fixture(scope="module")
def family(grove: Grove) -> Iterator[list[str]]:
    """Four idle sandboxes sharing one template: forks of one parent when fork exists."""
    made: list[str] = []
    try:
        if fork_available(grove):
            parent = grove.ok("sandbox", "create", ENV).out.strip()
            made.append(parent)
            reply = grove.ok("sandbox", "fork", parent, "--replicas", "4", "--json").json()
            assert isinstance(reply, dict)
            siblings = [c["id"] for c in reply["children"]]
            made += siblings
            # The engine gives a fork's filled zero pages back right after it: the template
            # files the family maps have holes again.
            wait_for(lambda: allocation(mapped_memory_files(grove, made)), 120,
                     "the family's memory files to be given their zero pages back",
                     ready=have_holes)  # fmt: skip
        else:
            siblings = [grove.ok("sandbox", "create", ENV).out.strip() for _ in range(4)]
            made += siblings
        assert len(siblings) == 4
        fresh_top(grove, time.time(), lambda d: all(
            rows(d)[s]["unique_mem_bytes"] is not None for s in siblings))  # fmt: skip
        yield siblings
    finally:
        for sid in made:
            grove.run("sandbox", "terminate", sid)


def mapped_memory_files(grove: Grove, only: Collection[str] | None = None) -> set[str]:
    """Guest-RAM files running sandboxes (those in only, if given) map, from /proc/PID/maps
    (an independent check)."""
    mem_dir = str(grove.memory_dir())
    listed = grove.ok("ps", "--json").json()
    assert isinstance(listed, list)
    found = set()
    for sandbox in listed:
        if sandbox["phase"] != "running" or not sandbox["pid"]:
            continue
        if only is not None and sandbox["id"] not in only:
            continue
        try:
            maps = Path(f"/proc/{sandbox['pid']}/maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].startswith(mem_dir):
                found.add(parts[5])
    return found


def allocation(files: set[str]) -> dict[str, tuple[int, int]]:
    """(allocated, apparent) bytes of each file."""
    sizes = {}
    for name in files:
        st = os.stat(name)
        sizes[name] = (st.st_blocks * 512, st.st_size)
    return sizes


def have_holes(sizes: dict[str, tuple[int, int]]) -> bool:
    """Every file (and there is one) has unallocated pages: its zero pages were given back."""
    return bool(sizes) and all(allocated < size for allocated, size in sizes.values())


def test_cow_aware_total_is_below_naive_and_counts_the_template_once(
    grove: Grove, family: list[str]
) -> None:
    data = fresh_top(grove, time.time())
    host = data["host"]
    by_id = rows(data)
    running = [r for r in data["sandboxes"] if r["phase"] == "running"]
    assert all(by_id[s]["phase"] == "running" for s in family)
    for s in family:
        row = by_id[s]
        assert row["unique_mem_bytes"] < 16 * MIB, row  # idle: a few MiB of copies each
        assert row["shared_mem_bytes"] > row["unique_mem_bytes"]
        assert row["vmm_overhead_bytes"] > 0 and row["unique_disk_bytes"] > 0
        assert row["shared_disk_bytes"] > row["unique_disk_bytes"]
    assert host["cow_aware_mem_bytes"] < host["naive_mem_bytes"]
    assert host["saved_mem_bytes"] == host["naive_mem_bytes"] - host["cow_aware_mem_bytes"]
    # naive = every QEMU's RSS; CoW-aware = unique + VMM + each template file's RAM once.
    assert host["naive_mem_bytes"] == sum(r["rss_bytes"] for r in running)
    templates = host["template_mem_bytes"]
    assert (
        host["cow_aware_mem_bytes"]
        == sum(r["unique_mem_bytes"] + r["vmm_overhead_bytes"] for r in running) + templates
    )
    files = mapped_memory_files(grove)
    assert files, "no QEMU of this home maps a memory file"
    # ... and the delta states (on tmpfs, mapped by no one) of running sandboxes' templates.
    files |= delta_states_of(grove, [r["id"] for r in running])
    once = sum(os.stat(f).st_blocks * 512 for f in files)
    assert abs(templates - once) <= 2 * MIB, (templates, once, files)
    # Disk: each backing layer once, not once per sandbox.
    assert host["cow_aware_disk_bytes"] < host["naive_disk_bytes"]
    table = grove.ok("top").out
    assert "UNIQUE-MEM" in table and "CoW-aware" in table.replace("COW-AWARE", "CoW-aware")


def delta_states_of(grove: Grove, sandbox_ids: list[str]) -> set[str]:
    db = sqlite3.connect(f"file:{grove.home / 'grove.db'}?mode=ro", uri=True)
    try:
        marks = ",".join("?" for _ in sandbox_ids)
        rows = db.execute(
            "SELECT t.state_path FROM templates t JOIN sandboxes s ON s.template_id = t.id "
            f"WHERE s.id IN ({marks}) AND t.mem_base IS NOT NULL",
            sandbox_ids,
        ).fetchall()
    finally:
        db.close()
    return {r[0] for r in rows if r[0].endswith(".state")}


def test_guest_memory_write_grows_only_the_writer(grove: Grove, family: list[str]) -> None:
    writer, siblings = family[0], family[1:]
    before = rows(fresh_top(grove, time.time()))
    # /dev/shm in the guest is tmpfs: its pages are guest RAM, each one a new CoW copy here.
    grove.ok("sandbox", "exec", writer, "--", "dd", "if=/dev/zero", "of=/dev/shm/fill",
             "bs=1M", "count=64")  # fmt: skip
    done = time.time()

    def grown(data: dict[str, Any]) -> bool:
        now = rows(data)[writer]["unique_mem_bytes"]
        return bool(now is not None and now - before[writer]["unique_mem_bytes"] >= 50 * MIB)

    after = rows(fresh_top(grove, done, grown))
    growth = after[writer]["unique_mem_bytes"] - before[writer]["unique_mem_bytes"]
    print(f"\n[metering] writer unique +{growth / MIB:.1f} MiB")
    assert growth >= 50 * MIB
    for s in siblings:
        delta = after[s]["unique_mem_bytes"] - before[s]["unique_mem_bytes"]
        print(f"[metering] sibling {s} unique {delta / MIB:+.2f} MiB")
        assert abs(delta) <= 2 * MIB, (s, delta)
    grove.ok("sandbox", "exec", writer, "--", "rm", "-f", "/dev/shm/fill")


def test_disk_write_grows_unique_disk(grove: Grove, family: list[str]) -> None:
    sid = family[1]
    before = rows(fresh_top(grove, time.time()))[sid]["unique_disk_bytes"]
    write = "dd if=/dev/urandom of=/root/f bs=1M count=20 2>/dev/null && sync"
    grove.ok("sandbox", "exec", sid, "--", "sh", "-c", write, timeout=300)
    done = time.time()
    after = fresh_top(grove, done, lambda d: rows(d)[sid]["unique_disk_bytes"] - before >= 20 * MIB)
    growth = rows(after)[sid]["unique_disk_bytes"] - before
    print(f"\n[metering] unique disk +{growth / MIB:.1f} MiB")
    assert growth >= 20 * MIB


def test_history_keeps_samples_for_sparklines(grove: Grove, family: list[str]) -> None:
    from engine.client import Grove as Client
    from engine.config import Paths

    with Client.connect(Paths(grove.home), autostart=False) as client:
        # The sampler adds one sample per interval: run alone, this test may come early.
        reply = wait_for(
            lambda: client.metering_history(family[0]),
            120, "three samples with memory data in the history",
            ready=lambda r: len(r.samples) >= 3
            and all(s.unique_mem_bytes is not None for s in r.samples[-3:]),
        )  # fmt: skip
    assert reply.sandbox_id == family[0] and reply.interval_s
    stamps = [s.sampled_at or 0.0 for s in reply.samples]
    assert stamps == sorted(stamps) and all(stamps)


def test_stopped_and_terminated_sandboxes_have_no_datum(grove: Grove) -> None:
    sid = grove.ok("sandbox", "create", ENV).out.strip()
    try:
        grove.ok("sandbox", "stop", sid)
        row = rows(top(grove))[sid]
        assert row["phase"] == "stopped"
        for key in ("unique_mem_bytes", "shared_mem_bytes", "vmm_overhead_bytes",
                    "cpu_percent", "rss_bytes", "guest_mem_used_bytes", "net_rx_bytes",
                    "net_tx_bytes"):  # fmt: skip
            assert row[key] is None, (key, row)
        # Its disk is still there and still measured.
        assert row["unique_disk_bytes"] is not None and row["shared_disk_bytes"] is not None
        line = next(ln for ln in grove.ok("top").out.splitlines() if ln.startswith(sid))
        assert line.split()[3:6] == ["-", "-", "-"] and line.split()[-1] == "-"
    finally:
        grove.ok("sandbox", "terminate", sid)
    assert sid not in rows(top(grove))
    ended = rows(top(grove, "--all"))[sid]
    assert ended["phase"] == "terminated"
    assert all(ended[k] is None for k in SANDBOX_KEYS - {"id", "name"})
    line = next(ln for ln in grove.ok("top", "--all").out.splitlines() if ln.startswith(sid))
    assert line.split()[3:] == ["-"] * (len(COLUMNS) - 3)  # every datum column


def test_top_sort_and_bad_column(grove: Grove, family: list[str]) -> None:
    data = top(grove, "--sort", "UNIQUE-MEM")
    values = [r["unique_mem_bytes"] for r in data["sandboxes"] if r["unique_mem_bytes"] is not None]
    assert values == sorted(values, reverse=True)
    bad = grove.run("top", "--sort", "nope")
    assert bad.code != 0
    assert "unknown sort column 'nope'" in bad.err and "UNIQUE-MEM" in bad.err
    assert grove.run("top", "--watch", "--interval", "0").code != 0


def test_watch_streams_until_interrupted(grove: Grove, family: list[str]) -> None:
    proc = grove.popen("top", "--watch", "--json", "--interval", "1")
    assert proc.stdout is not None
    try:
        first, second = proc.stdout.readline(), proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    a, b = json.loads(first), json.loads(second)
    assert b["sampled_at"] > a["sampled_at"]
    assert code == 0
