"""The README's SDK example, run as written against the test engine: it must stay true."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO, Grove

MARK = "<!-- sdk-example: run by tests/test_sdk_example.py -->"


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    assert MARK in text, "the README lost its SDK example"
    match = re.search(r"```python\n(.*?)```", text[text.index(MARK) :], re.S)
    assert match is not None
    return match.group(1)


def test_readme_sdk_example_runs_as_written(grove: Grove) -> None:
    code = readme_example()
    assert len(code.strip().splitlines()) <= 15
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=grove.env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    children = [line for line in lines if line.startswith("sb-")]
    assert len(children) == 3, proc.stdout
    for line in children:
        # The parent's file, and the child's own host name.
        child = line.split()[0]
        assert line == f"{child} 0 ['from-parent', '{child}']", line
    assert re.fullmatch(r"source paused \d+ ms", lines[-1]), lines
    listed = grove.ok("ps", "--json").json()
    assert isinstance(listed, list)
    assert not [s for s in listed if s["name"] == "sdk-demo"], "the example left its sandbox"
