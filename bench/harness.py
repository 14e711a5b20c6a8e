"""A private engine for benchmarks, and the statistics every benchmark reports."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.client import Grove
from engine.config import Paths

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Series:
    """Repeated measurements of one thing, in milliseconds."""

    name: str
    samples: list[float] = field(default_factory=list)
    target_ms: float | None = None

    def add(self, ms: float) -> None:
        self.samples.append(ms)

    def summary(self) -> dict[str, Any]:
        s = sorted(self.samples)
        return {
            "name": self.name,
            "n": len(s),
            "p50_ms": round(statistics.median(s), 3) if s else None,
            "p90_ms": round(s[min(len(s) - 1, int(len(s) * 0.9))], 3) if s else None,
            "min_ms": round(s[0], 3) if s else None,
            "max_ms": round(s[-1], 3) if s else None,
            "target_ms": self.target_ms,
            "meets_target": (statistics.median(s) <= self.target_ms)
            if s and self.target_ms is not None
            else None,
        }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return (time.perf_counter() - started) * 1000, value


@contextmanager
def private_engine(image_cache: Path | None) -> Iterator[Grove]:
    """A throwaway GROVE_HOME with the image layers linked in, and an engine serving it."""
    home = Path(tempfile.mkdtemp(prefix="gb", dir="/tmp"))
    if image_cache is not None:
        for part in ("images", "envs"):
            if (image_cache / part).is_dir():
                subprocess.run(["cp", "-al", str(image_cache / part), str(home / part)], check=True)
    os.environ["GROVE_HOME"] = str(home)
    paths = Paths(home)
    try:
        client = Grove.connect(paths)
        try:
            yield client
        finally:
            client.close()
    finally:
        subprocess.run(
            [sys.executable, "-m", "engine.cli.main", "engine", "stop"],
            env={**os.environ, "GROVE_HOME": str(home)},
            capture_output=True,
            timeout=300,
        )
        shutil.rmtree(paths.memory_dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def engine_with(image_cache: Path, **env: str) -> Iterator[Grove]:
    """A private engine started with env set (and the caller's environment as it was after)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with private_engine(image_cache) as client:
            yield client
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def engine_paths(client: Grove) -> Paths:
    """The paths of the engine the client talks to (its GROVE_HOME, as the engine says)."""
    return Paths(Path(client.status().home))


def print_table(results: list[dict[str, Any]]) -> None:
    head = f"{'measure':44} {'n':>4} {'p50 ms':>10} {'p90 ms':>10} {'target':>9}  ok"
    print(head, file=sys.stderr)
    print("-" * len(head), file=sys.stderr)
    for r in results:
        target = "-" if r.get("target_ms") is None else f"{r['target_ms']:g}"
        ok = {True: "yes", False: "NO", None: "-"}[r.get("meets_target")]
        p50 = "-" if r.get("p50_ms") is None else f"{r['p50_ms']:.2f}"
        if "ratio" in r:
            p50 = "-" if r["ratio"] is None else f"{r['ratio']:.1f}x"
        p90 = "-" if r.get("p90_ms") is None else f"{r['p90_ms']:.2f}"
        print(f"{r['name']:44} {r.get('n', 1):>4} {p50:>10} {p90:>10} {target:>9}  {ok}",
              file=sys.stderr)  # fmt: skip
