"""Snapshot-fork of running sandboxes, lineage, snapshots, reset, diff and GC on real VMs."""

from __future__ import annotations

import math
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ENV, Grove
from waiting import wait_for

COUNTER = (
    "setsid sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.2; done' "
    "> /dev/null 2>&1 < /dev/null &"
)


def sh(grove: Grove, sid: str, script: str) -> str:
    return grove.ok("sandbox", "exec", sid, "--", "sh", "-c", script).out


def fork(grove: Grove, sid: str, *extra: str) -> dict[str, Any]:
    data = grove.ok("sandbox", "fork", sid, "--json", *extra).json()
    assert isinstance(data, dict)
    return data


def counter(grove: Grove, sid: str) -> int:
    """The counter loop's last value (it starts at 1); 0 while the file is empty, which a fork
    may catch: `echo $i > /tmp/counter` truncates the file before it writes the number."""
    text = sh(grove, sid, "cat /tmp/counter 2>/dev/null || true").strip()
    return int(text) if text.isdigit() else 0


def counter_moves_on(grove: Grove, sid: str) -> None:
    """The counter loop is alive in sid: its value grows past the first one read."""
    first = wait_for(lambda: counter(grove, sid), 60, f"a number in {sid}'s /tmp/counter")
    wait_for(lambda: counter(grove, sid), 60, f"{sid}'s /tmp/counter to grow past {first}",
             ready=lambda n: n > first)  # fmt: skip


def lineage(grove: Grove, root: str) -> list[str]:
    """root and every listed sandbox descended from it (via parent_id), leaves first."""
    listed = grove.ok("ps", "--json").json()
    assert isinstance(listed, list)
    children: dict[str, list[str]] = {}
    for record in listed:
        if record.get("parent_id"):
            children.setdefault(record["parent_id"], []).append(record["id"])
    order: list[str] = []
    stack = [root]
    while stack:
        sid = stack.pop()
        order.append(sid)
        stack += children.get(sid, [])
    return order[::-1]


def terminate_lineage(grove: Grove, root: str) -> None:
    """Terminate root and its descendants only: other tests' sandboxes on this engine stay."""
    for sid in lineage(grove, root):
        grove.run("sandbox", "terminate", sid)


@pytest.fixture
def parent(grove: Grove) -> Any:
    sid = grove.ok("sandbox", "create", ENV).out.strip()
    try:
        sh(grove, sid, "echo from-parent > /root/inherited; echo tmpfs > /tmp/in-ram; " + COUNTER)
        wait_for(lambda: counter(grove, sid), 60, "the counter loop to write a number")
        yield sid
    finally:
        terminate_lineage(grove, sid)


def test_children_inherit_files_memory_and_processes(grove: Grove, parent: str) -> None:
    reply = fork(grove, parent, "--replicas", "3", "--name", "kid")
    assert reply["source"] == parent and reply["snapshot"]
    children = reply["children"]
    assert [c["name"] for c in children] == ["kid-1", "kid-2", "kid-3"]
    assert all(c["phase"] == "running" for c in children)
    for child in children:
        cid = child["id"]
        assert sh(grove, cid, "cat /root/inherited /tmp/in-ram") == "from-parent\ntmpfs\n"
        # The counter loop kept running across the fork: it is alive and still counting.
        counter_moves_on(grove, cid)
        processes = sh(grove, cid, "ps -eo args")
        assert "sleep 0.2" in processes or "sh -c i=0" in processes
    # The source resumed and keeps running too.
    assert sh(grove, parent, "cat /root/inherited") == "from-parent\n"
    listed = {s["id"]: s for s in grove.ok("ps", "--json").json()}  # type: ignore[union-attr]
    assert listed[parent]["phase"] == "running"
    assert all(listed[c["id"]]["parent_id"] == parent for c in children)


def test_children_diverge_independently(grove: Grove, parent: str) -> None:
    a, b = (c["id"] for c in fork(grove, parent, "--replicas", "2")["children"])
    sh(grove, a, "echo only-a > /root/mine; rm /root/inherited")
    assert grove.run("sandbox", "exec", b, "--", "cat", "/root/mine").code != 0
    assert grove.run("sandbox", "exec", parent, "--", "cat", "/root/mine").code != 0
    assert sh(grove, b, "cat /root/inherited") == "from-parent\n"
    assert sh(grove, parent, "cat /root/inherited") == "from-parent\n"
    sh(grove, parent, "echo parent-later > /root/later")
    assert grove.run("sandbox", "exec", a, "--", "cat", "/root/later").code != 0


def test_identity_rng_clock_and_hostname_are_per_sandbox(grove: Grove, parent: str) -> None:
    kids = [c["id"] for c in fork(grove, parent, "--replicas", "2")["children"]]
    streams = {
        sid: sh(grove, sid, "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'")
        for sid in [parent, *kids]
    }
    assert len(set(streams.values())) == 3, streams
    for sid in kids:
        assert sh(grove, sid, "hostname").strip() == sid
        # The clock was stepped to the host's: `date +%s` (truncated) falls within the host's
        # time around the exec, give or take a second.
        before = time.time()
        guest_time = int(sh(grove, sid, "date +%s"))
        after = time.time()
        assert math.floor(before) - 1 <= guest_time <= math.floor(after) + 1, (
            before, guest_time, after)  # fmt: skip


def test_fork_of_a_fork(grove: Grove, parent: str) -> None:
    child = fork(grove, parent)["children"][0]["id"]
    sh(grove, child, "echo from-child > /root/gen2")
    grandchild = fork(grove, child)["children"][0]["id"]
    assert sh(grove, grandchild, "cat /root/inherited /root/gen2") == "from-parent\nfrom-child\n"
    tree = grove.ok("tree", "--json").json()
    assert isinstance(tree, list)

    def find(nodes: list[dict[str, Any]], ident: str) -> dict[str, Any] | None:
        for node in nodes:
            if node["id"] == ident:
                return node
            hit = find(node["children"], ident)
            if hit:
                return hit
        return None

    env_root = next(n for n in tree if n["kind"] == "environment" and n["name"] == ENV)
    p = find(env_root["children"], parent)
    assert p is not None and p["kind"] == "sandbox"
    c = find(p["children"], child)
    assert c is not None
    assert [g["id"] for g in c["children"]] == [grandchild]
    text = grove.ok("tree").out
    assert ENV in text and grandchild in text


def test_snapshots_reset_and_create_from_snapshot(grove: Grove, parent: str) -> None:
    sh(grove, parent, "echo v1 > /root/version")
    snap = grove.ok("snapshot", "create", parent, "base-v1", "--json").json()
    assert isinstance(snap, dict) and snap["name"] == "base-v1"
    listed = grove.ok("snapshot", "ls", "--json").json()
    assert isinstance(listed, list)
    entry = next(s for s in listed if s["name"] == "base-v1")
    assert {"name", "source", "created_at", "dependents"} <= entry.keys()
    assert entry["source"] == parent
    sh(grove, parent, "echo v2 > /root/version; touch /root/after")
    restored = grove.ok("sandbox", "create", "--from-snapshot", "base-v1").out.strip()
    try:  # a restore has no parent_id: the parent fixture would not find it
        assert sh(grove, restored, "cat /root/version") == "v1\n"
        # Reset to the snapshot, then back to the sandbox's creation state.
        grove.ok("sandbox", "reset", parent, "--snapshot", "base-v1")
        assert sh(grove, parent, "cat /root/version") == "v1\n"
        assert grove.run("sandbox", "exec", parent, "--", "test", "-e", "/root/after").code != 0
        grove.ok("sandbox", "reset", parent)
        assert grove.run("sandbox", "exec", parent, "--", "test", "-e", "/root/version").code != 0
        # A snapshot something depends on cannot go; once free, it can.
        busy = grove.run("snapshot", "rm", "base-v1", "--json")
        assert busy.code != 0
        error = busy.json()["error"]  # type: ignore[index]
        assert error["code"] == "snapshot_in_use" and restored in error["message"]
        grove.ok("sandbox", "terminate", restored)
        grove.ok("snapshot", "rm", "base-v1")
        assert "base-v1" not in grove.ok("snapshot", "ls").out
    finally:
        grove.run("sandbox", "terminate", restored)
        grove.run("snapshot", "rm", "base-v1")


def test_diff_against_parent(grove: Grove, parent: str) -> None:
    child = fork(grove, parent)["children"][0]["id"]
    sh(grove, child, "echo new > /root/added.txt; echo changed > /root/inherited; "
       "rm /etc/issue.net; mkdir /root/newdir")  # fmt: skip
    data = grove.ok("sandbox", "diff", child, "--json", "--path", "/root", "--path", "/etc",
                    timeout=600).json()  # fmt: skip
    assert isinstance(data, dict)
    changes = {c["path"]: c for c in data["changes"]}
    assert changes["/root/added.txt"]["change"] == "added"
    assert changes["/root/added.txt"]["new_sha256"]
    assert changes["/root/inherited"]["change"] == "modified"
    assert "-from-parent" in changes["/root/inherited"]["patch"]
    assert "+changed" in changes["/root/inherited"]["patch"]
    assert changes["/etc/issue.net"]["change"] == "deleted"
    assert changes["/root/newdir"]["kind"] == "dir"
    human = grove.ok("sandbox", "diff", child, "--path", "/root", timeout=600).out
    assert "A /root/added.txt" in human and "M /root/inherited" in human


def row_of(grove: Grove, table: str, row_id: str) -> dict[str, Any]:
    db = sqlite3.connect(f"file:{grove.home / 'grove.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        row = db.execute(f"SELECT * FROM {table} WHERE id = ?", (row_id,)).fetchone()
    finally:
        db.close()
    return dict(row) if row is not None else {}


def template_row(grove: Grove, template_id: str) -> dict[str, Any]:
    return row_of(grove, "templates", template_id)


def mem_path_of(grove: Grove, sid: str) -> str:
    """The memory file sid's QEMU maps, from its command line."""
    pid = row_of(grove, "sandboxes", sid)["pid"]
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    backend = next(a.decode() for a in argv if a.startswith(b"memory-backend-file"))
    return backend.split("mem-path=")[1].split(",")[0]


def test_a_fork_of_a_restored_sandbox_is_a_delta_over_its_memory_file(
    grove: Grove, parent: str
) -> None:
    """Children map the parent's own memory file; the new template holds only the pages the
    parent wrote (its state), so a fork adds no memory file and GC has none to free."""
    sh(grove, parent, "head -c 8000000 /dev/urandom > /dev/shm/blob; sha256sum /dev/shm/blob")
    digest = sh(grove, parent, "sha256sum /dev/shm/blob")
    before = sorted(p.name for p in grove.memory_dir().glob("*.mem"))
    reply = fork(grove, parent, "--replicas", "2")  # auto: 2 x 8 MB is less than a copy
    assert reply["memory"] == "delta"
    template = reply["snapshot"]
    row = template_row(grove, template)
    assert row["mem_base"] and row["mem_path"] == mem_path_of(grove, parent)
    assert sorted(p.name for p in grove.memory_dir().glob("*.mem")) == before, "no memory file"
    state = Path(row["state_path"])
    # Its state is guest RAM too: on tmpfs beside the memory files, not under GROVE_HOME.
    assert state.parent == grove.memory_dir() and state.name == f"{template}.state"
    # the 8 MB the parent wrote travel in the state, not the ~90 MiB the guest uses
    assert 8_000_000 < state.stat().st_size < 60 << 20
    first, second = (c["id"] for c in reply["children"])
    for child in (first, second):
        assert mem_path_of(grove, child) == row["mem_path"]
        assert sh(grove, child, "sha256sum /dev/shm/blob") == digest
        assert sh(grove, child, "cat /root/inherited /tmp/in-ram") == "from-parent\ntmpfs\n"
    grove.ok("sandbox", "terminate", first)
    grove.ok("sandbox", "terminate", second)
    # The parent still sits on the frozen disk layer: the layer stays, the state goes; the
    # memory file stays with the parent, which runs on it.
    assert template_row(grove, template)["phase"] == "layer"
    assert not state.exists()
    assert Path(row["mem_path"]).exists()
    assert sh(grove, parent, "sha256sum /dev/shm/blob") == digest


def test_gc_frees_unneeded_snapshots_and_keeps_needed(grove: Grove, parent: str) -> None:
    reply = fork(grove, parent, "--replicas", "2", "--memory", "full")
    assert reply["memory"] == "full"
    template = reply["snapshot"]
    mem_dir = grove.memory_dir()
    assert template_row(grove, template)["mem_base"] is None
    assert (mem_dir / f"{template}.mem").exists()
    first, second = (c["id"] for c in reply["children"])
    grove.ok("sandbox", "terminate", first)
    assert (mem_dir / f"{template}.mem").exists(), "still needed by the second child"
    assert sh(grove, second, "cat /root/inherited") == "from-parent\n"
    grove.ok("sandbox", "terminate", second)
    # The source still sits on the frozen disk layer, so that layer stays; the memory goes.
    assert not (mem_dir / f"{template}.mem").exists()
    assert sh(grove, parent, "cat /root/inherited") == "from-parent\n"


def test_fork_validation(grove: Grove, parent: str) -> None:
    bad = grove.run("sandbox", "fork", parent, "--replicas", "0", "--json")
    assert bad.code != 0 and bad.json()["error"]["code"] == "invalid_argument"  # type: ignore[index]
    layout = grove.run("sandbox", "fork", parent, "--memory", "half", "--json")
    assert layout.code != 0 and "--memory" in layout.json()["error"]["message"]  # type: ignore[index]
    missing = grove.run("sandbox", "fork", "sb-00000000", "--json")
    assert missing.json()["error"]["code"] == "sandbox_not_found"  # type: ignore[index]
    grove.ok("sandbox", "stop", parent)
    stopped = grove.run("sandbox", "fork", parent, "--json")
    assert stopped.json()["error"]["code"] == "sandbox_not_running"  # type: ignore[index]


# Rewrites 8 MiB of tmpfs and frees it again, over and over: pages change and are freed right
# up to the fork's pause (a live copy, which runs on through such changes, failed this).
CHURN = (
    "nohup sh -c 'while :; do head -c 8388608 /dev/urandom > /dev/shm/churn; "
    "rm /dev/shm/churn; done' > /dev/null 2>&1 &"
)


def test_forks_of_a_source_busy_writing_memory_are_consistent(grove: Grove) -> None:
    """A copy that misses a page changed under it gives children a corrupt memory: their
    kernel crashes (they do not answer) or their files differ from the source's."""
    sid = grove.ok("sandbox", "create", ENV).out.strip()
    try:
        sh(grove, sid, "echo data > /root/f; " + CHURN)
        for _ in range(4):
            for child in fork(grove, sid, "--replicas", "2")["children"]:
                cid = child["id"]
                out = sh(grove, cid, "cat /root/f; head -c 1048576 /dev/urandom | wc -c")
                assert out == "data\n1048576\n", out
                grove.run("sandbox", "terminate", cid)
    finally:
        terminate_lineage(grove, sid)
