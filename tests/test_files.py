"""Files in and out of real VMs: file ls/read/write, push and pull, patch, offline disks.

Every bad input of the files issue is a test here; the round trips compare bytes exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ENV, Grove

pytestmark = pytest.mark.vm


def sh(grove: Grove, sandbox: str, script: str) -> str:
    return grove.ok("sandbox", "exec", sandbox, "--", "sh", "-c", script).out


def error(grove: Grove, *args: str) -> dict[str, str]:
    result = grove.run(*args, "--json")
    assert result.code != 0, f"grove {' '.join(args)} should have failed: {result.out}"
    found = json.loads(result.out)["error"]
    assert found["message"] and found["remedy"], found
    return dict(found)


def project(root: Path) -> dict[str, bytes]:
    """A small git work tree: a build script, nested text, a binary, an ignored file."""
    files = {
        "build.sh": (
            b"set -e\nmkdir -p out\ncat src/*.txt > out/all.txt\nsha256sum data.bin > out/sum\n"
        ),
        "src/a.txt": b"alpha\n",
        "src/b.txt": b"beta\n",
        "data.bin": os.urandom(3 * 1024 * 1024 + 17),
        ".gitignore": b"*.log\n",
        "name with spaces.txt": "unicodé\n".encode(),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "debug.log").write_bytes(b"ignored by .gitignore\n")
    (root / "cache").mkdir()
    (root / "cache" / "big.tmp").write_bytes(b"excluded by --exclude\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return files


def test_push_exec_pull_round_trip(grove: Grove, sandbox: str, tmp_path: Path) -> None:
    local = tmp_path / "project"
    files = project(local)
    pushed = grove.ok("push", sandbox, str(local), "--dest", "/root/project",
                      "--exclude", "cache", "--json").json()  # fmt: skip
    assert isinstance(pushed, dict)
    assert pushed["files"] == len(files) and pushed["excluded"] >= 2
    listing = sh(grove, sandbox, "cd /root/project && find . -type f | sort")
    assert "./debug.log" not in listing and "./cache/big.tmp" not in listing
    assert "./name with spaces.txt" in listing
    grove.ok("sandbox", "exec", sandbox, "--cwd", "/root/project", "--", "sh", "build.sh")
    out = tmp_path / "out"
    pulled = grove.ok("pull", sandbox, "/root/project/out", "-o", str(out), "--json").json()
    assert isinstance(pulled, dict) and pulled["files"] == 2
    assert (out / "all.txt").read_bytes() == b"alpha\nbeta\n"
    digest = hashlib.sha256(files["data.bin"]).hexdigest()
    assert (out / "sum").read_text().split()[0] == digest
    # A file, and a tree kept as a tar; an existing output is refused without --force.
    grove.ok("pull", sandbox, "/root/project/data.bin", "-o", str(tmp_path))
    assert (tmp_path / "data.bin").read_bytes() == files["data.bin"]
    assert error(grove, "pull", sandbox, "/root/project/out", "-o", str(out))["code"] == (
        "local_exists"
    )
    grove.ok("pull", sandbox, "/root/project/src", "-o", str(tmp_path / "src.tar"), "--tar")
    listed = subprocess.run(["tar", "-tf", str(tmp_path / "src.tar")], capture_output=True)
    assert "a.txt" in listed.stdout.decode()


def test_file_verbs_are_binary_safe(grove: Grove, sandbox: str, tmp_path: Path) -> None:
    blob = bytes(range(256)) * 40
    (tmp_path / "blob").write_bytes(blob)
    grove.ok("file", "write", sandbox, "/root/new/dir/blob", "--from", str(tmp_path / "blob"),
             "--mode", "600")  # fmt: skip
    read = subprocess.run(
        [*grove_cli(grove), "file", "read", sandbox, "/root/new/dir/blob", "--content-only"],
        capture_output=True, env=grove.env, cwd=grove_cwd(), timeout=120,
    )  # fmt: skip
    assert read.returncode == 0 and read.stdout == blob
    grove.ok("file", "write", sandbox, "/root/t.txt", "--text", "hello text")
    assert sh(grove, sandbox, "cat /root/t.txt") == "hello text"
    entries = grove.ok("file", "ls", sandbox, "/root/new", "--recursive", "--json").json()
    assert isinstance(entries, list)
    by_path = {e["path"]: e for e in entries}
    assert by_path["/root/new/dir/blob"]["size"] == len(blob)
    assert by_path["/root/new/dir/blob"]["mode"] == 0o600
    assert by_path["/root/new/dir"]["type"] == "directory"
    short = grove.ok("file", "read", sandbox, "/root/new/dir/blob", "--max-bytes", "10", "--json")
    info = short.json()
    assert isinstance(info, dict) and info["truncated"] and info["size"] == len(blob)


def test_bad_input_fails_with_a_cause_and_a_remedy(
    grove: Grove, sandbox: str, tmp_path: Path
) -> None:
    assert error(grove, "file", "ls", "sb-nosuch", "/")["code"] == "sandbox_not_found"
    assert error(grove, "file", "read", sandbox, "etc/hostname")["code"] == "invalid_argument"
    assert error(grove, "file", "read", sandbox, "/no/such/file")["code"] == "file_not_found"
    assert error(grove, "file", "read", sandbox, "/etc")["code"] == "not_a_file"
    assert error(grove, "push", sandbox, str(tmp_path / "missing"))["code"] == "local_not_found"
    assert error(grove, "disk", "ls", sandbox, "/")["code"] == "sandbox_running"
    huge = tmp_path / "huge.bin"
    with open(huge, "wb") as f:
        f.truncate(1024**3 + 1)  # sparse: over the default 1 GiB limit, costs nothing
    assert error(grove, "push", sandbox, str(huge), "--dest", "/root/huge")["code"] == (
        "push_too_large"
    )
    assert "huge" not in sh(grove, sandbox, "ls /root")


def test_disk_full_and_interrupted_push_leave_the_old_content(
    grove: Grove, sandbox: str, tmp_path: Path
) -> None:
    sh(grove, sandbox, "mkdir -p /mnt/small && mount -t tmpfs -o size=1m tmpfs /mnt/small"
                       " && echo old > /mnt/small/keep")  # fmt: skip
    big = tmp_path / "big"
    big.mkdir()
    (big / "keep").write_bytes(os.urandom(3 * 1024 * 1024))
    found = error(grove, "push", sandbox, str(big), "--dest", "/mnt/small")
    assert found["code"] == "guest_disk_full"
    assert sh(grove, sandbox, "cat /mnt/small/keep; ls -a /mnt | grep -c grove || true") == (
        "old\n0\n"
    )
    # Kill the CLI mid-stream: the engine aborts, the guest drops its staging.
    grove.ok("file", "write", sandbox, "/root/victim/data", "--text", "old content")
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "data").write_bytes(os.urandom(60 * 1024 * 1024))
    proc = grove.popen("push", sandbox, str(tmp_path / "victim"), "--dest", "/root/victim")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if ".grove-push" in sh(grove, sandbox, "ls -a /root/victim"):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the push never started staging")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while ".grove-push" in sh(grove, sandbox, "ls -a /root/victim") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ".grove-push" not in sh(grove, sandbox, "ls -a /root /root/victim")
    assert sh(grove, sandbox, "cat /root/victim/data") == "old content"


def test_sandbox_diff_applies_onto_the_parent_with_patch(grove: Grove, tmp_path: Path) -> None:
    parent = grove.ok("sandbox", "create", ENV).out.strip()
    try:
        setup = (
            "mkdir -p /srv/app && printf 'one\\ntwo\\nthree\\n' > /srv/app/a.txt"
            " && printf 'gone\\n' > /srv/app/old.txt && printf 'x' > /srv/app/nonl"
        )
        sh(grove, parent, setup)
        child = grove.ok("sandbox", "fork", parent, "--json").json()
        assert isinstance(child, dict)
        child_id = child["children"][0]["id"]
        sh(grove, child_id, "printf 'one\\n2\\nthree\\nfour\\n' > /srv/app/a.txt"
                            " && rm /srv/app/old.txt && printf 'new\\n' > /srv/app/new.txt"
                            " && printf 'y' > /srv/app/nonl")  # fmt: skip
        diff = grove.ok("sandbox", "diff", child_id, "--path", "/srv/app").out
        bad = grove.run("patch", parent, "-", input="--- a/srv/app/a.txt\n+++ b/srv/app/a.txt\n"
                        "@@ -1,1 +1,1 @@\n-nope\n+yes\n")  # fmt: skip
        assert bad.code != 0 and "patch" in bad.err
        assert sh(grove, parent, "cat /srv/app/a.txt") == "one\ntwo\nthree\n"
        binary = "diff --git a/x b/x\nGIT binary patch\nliteral 0\n"
        assert grove.run("patch", parent, "-", input=binary).code != 0
        applied = grove.run("patch", parent, "-", "--json", input=diff)
        assert applied.code == 0, applied.err
        result = json.loads(applied.out)
        assert result["added"] == ["/srv/app/new.txt"]
        assert result["deleted"] == ["/srv/app/old.txt"]
        assert sorted(result["modified"]) == ["/srv/app/a.txt", "/srv/app/nonl"]
        assert sh(grove, parent, "cat /srv/app/a.txt /srv/app/new.txt /srv/app/nonl") == (
            "one\n2\nthree\nfour\nnew\ny"
        )
        assert "old.txt" not in sh(grove, parent, "ls /srv/app")
        grove.run("sandbox", "terminate", child_id)
    finally:
        grove.run("sandbox", "terminate", parent)


def test_disk_verbs_read_a_stopped_sandbox_and_a_snapshot(grove: Grove, tmp_path: Path) -> None:
    box = grove.ok("sandbox", "create", ENV).out.strip()
    try:
        blob = os.urandom(100_000)
        (tmp_path / "blob").write_bytes(blob)
        grove.ok("file", "write", box, "/root/offline/blob", "--from", str(tmp_path / "blob"))
        grove.ok("snapshot", "create", box, "offline-snap")
        sh(grove, box, "sync")
        grove.ok("sandbox", "stop", box)
        assert error(grove, "file", "ls", box, "/root")["code"] == "sandbox_not_running"
        entries = grove.ok("disk", "ls", box, "/root/offline", "--json").json()
        assert isinstance(entries, list) and entries[0]["size"] == len(blob)
        read = subprocess.run(
            [*grove_cli(grove), "disk", "read", box, "/root/offline/blob", "--max-bytes",
             str(len(blob)), "--content-only"],
            capture_output=True, env=grove.env, cwd=grove_cwd(), timeout=120,
        )  # fmt: skip
        assert read.returncode == 0 and read.stdout == blob
        snap = grove.ok("disk", "ls", "offline-snap", "/root/offline", "--json").json()
        assert isinstance(snap, list) and snap[0]["path"] == "/root/offline/blob"
        out = tmp_path / "disk.qcow2"
        grove.ok("disk", "export", box, "-o", str(out), timeout=600)
        check = subprocess.run(["qemu-img", "check", str(out)], capture_output=True)
        assert check.returncode == 0
        info = json.loads(
            subprocess.run(
                ["qemu-img", "info", "--output=json", str(out)], capture_output=True, check=True
            ).stdout
        )
        assert "backing-filename" not in info  # the whole chain, flattened
        assert error(grove, "disk", "export", box, "-o", str(out))["code"] == "local_exists"
    finally:
        grove.run("sandbox", "terminate", box)
        grove.run("snapshot", "rm", "offline-snap")


def test_sdk_files_of_a_sandbox(grove: Grove, sandbox: str, tmp_path: Path) -> None:
    from engine.client import Grove as Client
    from engine.config import Paths

    with Client.connect(paths=Paths(grove.home), autostart=False) as client:
        files = client.files(sandbox)
        files.write("/root/sdk/hello", b"hi\x00there", mode=0o640)
        read = files.read("/root/sdk/hello")
        assert read.data == b"hi\x00there" and read.mode == 0o640 and not read.truncated
        assert [e.path for e in files.list("/root/sdk")] == ["/root/sdk/hello"]
        (tmp_path / "tree" / "x").mkdir(parents=True)
        (tmp_path / "tree" / "x" / "y").write_bytes(b"why")
        seen: list[str] = []
        pushed = files.push(
            tmp_path / "tree", "/root/sdk/tree", progress=lambda p: seen.append(p.stage)
        )
        assert pushed.files == 1 and "sending" in seen and seen[-1] == "done"
        pulled = files.pull("/root/sdk/tree", tmp_path / "back")
        assert pulled.type == "directory"
        assert (tmp_path / "back" / "x" / "y").read_bytes() == b"why"


def grove_cli(grove: Grove) -> list[str]:
    import sys

    return [sys.executable, "-m", "engine.cli.main"]


def grove_cwd() -> Path:
    return Path(__file__).resolve().parent.parent
