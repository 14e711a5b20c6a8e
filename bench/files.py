"""Files in and out through the real API: push and pull of one 100 MiB file and of a 100 MiB
tree of 2,000 files, and a 4 KiB file read's round trip.

The baseline, measured in the same run, is the same 100 MiB through exec (stdin into `cat`,
stdout out of `cat`): the agent channel without any file semantics. Every transfer checks a
sha256 per file, so the bulk path pays for hashing on both sides; the guest's share of that
is what TCG makes slow (see the closing figures in the README).

    python -m bench --only files
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import Series
from engine.client import Grove

ENV = "debian:12"
MIB = 1024 * 1024
SIZE = 100 * MIB
TREE_FILES = 2000


def _tree(root: Path) -> None:
    each = SIZE // TREE_FILES
    for i in range(TREE_FILES):
        path = root / f"d{i % 40:02d}" / f"f{i:04d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(each))


def _rate(name: str, series: Series, size: int, target: float | None) -> dict[str, Any]:
    summary = series.summary()
    p50 = statistics.median(series.samples)
    summary["mib_per_s"] = round(size / MIB / (p50 / 1000), 2)
    summary["target_mib_per_s"] = target
    summary["meets_target"] = None if target is None else summary["mib_per_s"] >= target
    summary["target_ms"] = None
    summary["name"] = name
    return summary


# What one guest vCPU does in Python with no channel at all: a 4 KiB read loop (virtio-serial
# hands the guest at most one 4 KiB buffer per read) and sha256, each over 100 MiB.
CEILING = """
import hashlib, os, time
fd = os.open("/dev/zero", os.O_RDONLY)
began = time.perf_counter()
for _ in range(25600):
    os.read(fd, 4096)
reads = time.perf_counter() - began
block = bytes(1 << 20)
began = time.perf_counter()
digest = hashlib.sha256()
for _ in range(100):
    digest.update(block)
print(reads, time.perf_counter() - began)
"""


def _ceilings(client: Grove, sandbox: str, n: int) -> list[dict[str, Any]]:
    reads = Series("guest: python 4 KiB read loop, 100 MiB")
    hashes = Series("guest: sha256 of 100 MiB")
    for _ in range(n):
        out = client.exec(sandbox, ["python3", "-c", CEILING]).stdout.split()
        reads.add(float(out[0]) * 1000)
        hashes.add(float(out[1]) * 1000)
    return [_rate(reads.name, reads, SIZE, None), _rate(hashes.name, hashes, SIZE, None)]


def _timed(fn: Any) -> float:
    began = time.perf_counter()
    fn()
    return (time.perf_counter() - began) * 1000


def run(client: Grove, rounds: int) -> list[dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="grove-bench-files-"))
    sandbox = client.create(ENV).id
    results: list[dict[str, Any]] = []
    try:
        blob = work / "blob.bin"
        blob.write_bytes(os.urandom(SIZE))
        tree = work / "tree"
        _tree(tree)
        data = blob.read_bytes()
        n = max(1, min(rounds, 3))
        series = {
            key: Series(key)
            for key in (
                "exec stdin", "exec stdout", "push file", "pull file", "push tree", "pull tree"
            )
        }  # fmt: skip
        for i in range(n):
            series["exec stdin"].add(
                _timed(lambda: client.exec(sandbox, ["sh", "-c", "cat > /tmp/x"], stdin=data))
            )
            series["exec stdout"].add(_timed(lambda: client.exec(sandbox, ["cat", "/tmp/x"])))
            client.exec(sandbox, ["rm", "-f", "/tmp/x"])
            series["push file"].add(
                _timed(lambda: client.push_files(sandbox, blob, "/root/blob.bin"))
            )
            out = work / f"pulled-{i}.bin"
            series["pull file"].add(
                _timed(lambda out=out: client.pull_files(sandbox, "/root/blob.bin", out))
            )
            assert out.stat().st_size == SIZE
            out.unlink()
            client.exec(sandbox, ["rm", "-rf", "/root/tree", "/root/blob.bin"])
            series["push tree"].add(_timed(lambda: client.push_files(sandbox, tree, "/root/tree")))
            back = work / f"tree-{i}"
            series["pull tree"].add(
                _timed(lambda back=back: client.pull_files(sandbox, "/root/tree", back))
            )
            shutil.rmtree(back)
        targets = {"push file": 30.0, "pull file": 30.0}
        for key, s in series.items():
            label = f"files: {key} 100 MiB" + (f" ({TREE_FILES} files)" if "tree" in key else "")
            results.append(_rate(label, s, SIZE, targets.get(key)))
        results += _ceilings(client, sandbox, n)
        client.file_write(sandbox, "/root/small", os.urandom(4096))
        read = Series("files: file read 4 KiB round trip", target_ms=15)
        for _ in range(max(rounds * 5, 30)):
            read.add(_timed(lambda: client.file_read(sandbox, "/root/small")))
        results.append(read.summary())
    finally:
        client.terminate(sandbox)
        shutil.rmtree(work, ignore_errors=True)
    return results


def print_summary(results: list[dict[str, Any]]) -> None:
    head = f"{'measure':48} {'n':>3} {'p50 ms':>10} {'MiB/s':>8} {'target':>8}  ok"
    print(head, file=sys.stderr)
    print("-" * len(head), file=sys.stderr)
    for r in results:
        rate = r.get("mib_per_s")
        target = r.get("target_mib_per_s") or r.get("target_ms")
        ok = {True: "yes", False: "NO", None: "-"}[r.get("meets_target")]
        print(
            f"{r['name']:48} {r['n']:>3} {r['p50_ms']:>10.1f} "
            f"{'-' if rate is None else f'{rate:.1f}':>8} {'-' if target is None else target:>8}"
            f"  {ok}",
            file=sys.stderr,
        )
