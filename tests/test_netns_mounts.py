"""Namespaces pinned under /run/netns stay removable when other tools use it too.

CI once lost its engine to this: the engine pinned a namespace while /run/netns was a plain
directory, a test's `ip netns add` then bind-mounted /run/netns over itself, and the
engine's earlier pin was hidden underneath (umount by path missed it, unlink gave EBUSY).
Each case runs in a private mount namespace of its own, so the host's /run/netns is never
touched, and every namespace it makes goes when its process ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare(1) and ip(8)",
)

# Inside the private mount namespace: start from a plain /run/netns directory, as on a
# fresh host (a tmpfs over it, so whatever the host has there is out of sight).
PRELUDE = """
import os, subprocess, sys
sys.path.insert(0, {root!r})
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
os.mkdir("/run/netns")
from engine.net import netns
def mounts():
    return [l.split()[4] for l in open("/proc/self/mountinfo") if "/run/netns" in l.split()[4]]
"""


def _run_private(body: str) -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = PRELUDE.format(root=root) + textwrap.dedent(body)
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", script],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_pin_made_before_ip_netns_add_is_still_removed() -> None:
    out = _run_private("""
        before = mounts().count("/run/netns")  # a covered host mount is listed there too
        netns.create("grove-t-1")
        subprocess.run(["ip", "netns", "add", "other-tool"], check=True)
        assert netns.remove("grove-t-1"), "the engine's namespace was hidden"
        assert not os.path.exists("/run/netns/grove-t-1")
        assert "/run/netns/grove-t-1" not in mounts()
        subprocess.run(["ip", "netns", "delete", "other-tool"], check=True)
        assert netns.hidden("grove-t-") == []  # the host's own pins are covered here
        print(mounts().count("/run/netns") - before)
    """)
    # /run/netns was made a mount point once, and `ip netns add` did not stack a second one.
    assert out.split() == ["1"]


def test_a_hidden_pin_is_reported_not_fatal_and_its_name_is_reused() -> None:
    # Reproduce the old state: a pin, then /run/netns bind-mounted over itself on top of it.
    out = _run_private("""
        import ctypes
        netns._run_dir_ready = True  # as an engine from before the fix: no mount point made
        netns.create("grove-t-2")
        subprocess.run(["mount", "--bind", "/run/netns", "/run/netns"], check=True)
        print("hidden", netns.hidden("grove-t-"))  # not the host's covered pins
        print("removed", netns.remove("grove-t-2"))
        netns._run_dir_ready = False
        netns.create("grove-t-2")  # the slot's name comes back into use
        netns.run_in("grove-t-2", lambda: None)
        netns.remove("grove-t-2")  # its file stays (the hidden pin holds it), unpinned
        print("pinned", netns._is_pinned(netns.path_of("grove-t-2")))
    """)
    assert out.splitlines() == ["hidden ['grove-t-2']", "removed False", "pinned False"]
