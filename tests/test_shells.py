"""Interactive shells on real VMs: a host PTY drives `grove shell`, scripts drive the verbs.

Also here: Ctrl+C on `grove sandbox exec` reaches the guest process group.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Any

import pexpect
import pytest
from conftest import REPO, Grove
from waiting import wait_for

PROMPT = r"root@[^:]+:[^#]*# "


def spawn_shell(grove: Grove, *args: str, rows: int = 24, cols: int = 80) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "engine.cli.main", "shell", *args],
        cwd=str(REPO),
        env={**grove.env, "TERM": "xterm-256color"},
        timeout=60,
        dimensions=(rows, cols),
    )
    return child


def _wait_output(grove: Grove, sandbox: str, shell: str, needle: str, timeout: float = 60) -> str:
    """Read from cursor 0 until needle shows up; returns all output so far."""

    def output() -> str:
        reply = grove.ok("shell", "read", sandbox, shell, "--json", "--wait-ms", "1000").json()
        assert isinstance(reply, dict)
        return str(reply["output"])

    return wait_for(output, timeout, f"{needle!r} in shell {shell}'s output",
                    ready=lambda text: needle in text, interval=0)  # fmt: skip


def _wait_running(grove: Grove, sandbox: str, program: str) -> None:
    """program runs in the guest (so a signal sent now reaches it, not the shell's prompt)."""
    wait_for(lambda: grove.run("sandbox", "exec", sandbox, "--", "pgrep", "-x", program).code == 0,
             60, f"{program} to run in {sandbox}")  # fmt: skip


def test_interactive_shell_resize_vi_ctrl_c_detach_and_reattach(grove: Grove, sandbox: str) -> None:
    child = spawn_shell(grove, sandbox)
    child.expect(r"attached to shell (sh-[0-9a-f]{6}) .*Ctrl\+\] d")
    shell_id = child.match.group(1).decode()
    child.expect(PROMPT)
    # The guest terminal has this terminal's size, and follows it (SIGWINCH -> resize).
    child.sendline("stty size")
    child.expect(r"[\r\n]24 80\r\n")
    child.setwinsize(40, 132)

    def guest_size_is_new() -> bool:
        child.sendline("stty size")
        return bool(child.expect([r"[\r\n]40 132\r\n", r"[\r\n]24 80\r\n"]) == 0)

    wait_for(guest_size_is_new, 30, "the resize to reach the guest", interval=0.3)
    # Colors and keys pass through untouched (escape sequences both ways).
    child.sendline("printf '\\033[31mred\\033[0m\\n'")
    child.expect("\x1b\\[31mred\x1b\\[0m")
    # A full-screen program: vi draws in the alternate screen, takes keys, writes the file.
    child.sendline("vi /tmp/from-vi.txt")
    child.expect(r"\x1b\[\?1049h")  # alternate screen on
    child.expect("from-vi.txt")
    child.send("ihello from vi")
    child.expect("hello from vi")  # vi took the keys in insert mode and drew them
    # No terminal key sequence starts with ESC ':', so vi reads the ESC as a key at once.
    child.send("\x1b:wq\r")
    child.expect(r"\x1b\[\?1049l")  # back to the normal screen
    child.expect(PROMPT)
    child.sendline("cat /tmp/from-vi.txt")
    child.expect(r"[\r\n]hello from vi\r\n")
    # Ctrl+C reaches the foreground job through the guest's terminal.
    child.sendline("sleep 300")
    _wait_running(grove, sandbox, "sleep")
    started = time.monotonic()
    child.send("\x03")
    child.expect(PROMPT)
    assert time.monotonic() - started < 10
    child.sendline("echo status=$?")
    child.expect("status=130")
    # Detach: the shell keeps running and a background job writes into its scrollback once
    # told to (after the detach). The quotes keep the echoed command from matching its output.
    child.sendline("echo marker-before-detach; (while [ ! -e /tmp/detached ]; do sleep 0.1; "
                   "done; echo written-while-de''tached) &")  # fmt: skip
    child.expect("marker-before-detach\r\n")
    child.send("\x1dd")
    child.expect("detached; shell " + shell_id + " keeps running")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    listed = grove.ok("shell", "ls", sandbox, "--json").json()
    assert isinstance(listed, list)
    assert [s["state"] for s in listed if s["shell_id"] == shell_id] == ["running"]
    grove.ok("sandbox", "exec", sandbox, "--", "touch", "/tmp/detached")
    _wait_output(grove, sandbox, shell_id, "written-while-detached")
    # Reattach: the scrollback replays what was before, and what came while away.
    again = spawn_shell(grove, sandbox, shell_id)
    again.expect("attached to shell " + shell_id)
    again.expect("marker-before-detach")
    again.expect("written-while-detached")
    again.sendline("exit 7")
    again.expect(r"shell " + shell_id + r" ended \(exit code 7\)")
    again.expect(pexpect.EOF)
    again.close()
    assert again.exitstatus == 7


def test_scriptable_shells_open_write_read_signal_close(grove: Grove, sandbox: str) -> None:
    opened = grove.ok("shell", "open", sandbox, "--cols", "100", "--rows", "30", "--json").json()
    assert isinstance(opened, dict)
    assert set(opened) == {"shell_id", "state", "cols", "rows"}
    assert (opened["state"], opened["cols"], opened["rows"]) == ("running", 100, 30)
    first = str(opened["shell_id"])
    second = grove.ok("shell", "open", sandbox, "--cwd", "/etc").out.strip()
    assert second != first
    # Several shells at once, each its own terminal and state.
    grove.ok("shell", "write", sandbox, first, "--input", "stty size; echo one-$((40+2))")
    grove.ok("shell", "write", sandbox, second, "--input", "pwd; echo two-$((1+1))")
    text = _wait_output(grove, sandbox, first, "one-42")
    assert "30 100" in text and "two-2" not in text
    assert "/etc" in _wait_output(grove, sandbox, second, "two-2")
    # Cursors: read in small pieces, each one picking up exactly where the last one ended.
    whole = grove.ok("shell", "read", sandbox, first, "--json").json()
    assert isinstance(whole, dict)
    assert {"output", "cursor", "next_cursor", "truncated", "state"} == set(whole)
    pieces, cursor = [], 0
    while cursor < whole["next_cursor"]:
        part = grove.ok("shell", "read", sandbox, first, "--json", "--cursor", str(cursor),
                        "--max-chars", "40").json()  # fmt: skip
        assert isinstance(part, dict) and len(part["output"]) <= 40
        assert part["cursor"] == cursor and part["next_cursor"] > cursor
        pieces.append(part["output"])
        cursor = part["next_cursor"]
    assert "".join(pieces).startswith(whole["output"][:50])
    # --no-newline types without Enter; signal INT ends the foreground job, not the shell.
    grove.ok("shell", "write", sandbox, first, "--input", "sleep 300", "--no-newline")
    grove.ok("shell", "write", sandbox, first, "--input", "")
    _wait_running(grove, sandbox, "sleep")
    grove.ok("shell", "signal", sandbox, first, "--signal", "INT")
    grove.ok("shell", "write", sandbox, first, "--input", "echo after-int-$?")
    assert "after-int-130" in _wait_output(grove, sandbox, first, "after-int-")
    listed = grove.ok("shell", "ls", sandbox, "--json").json()
    assert isinstance(listed, list)
    assert {first, second} <= {s["shell_id"] for s in listed}
    assert "SHELL" in grove.ok("shell", "ls", sandbox).out
    closed = grove.ok("shell", "close", sandbox, first, "--json").json()
    assert isinstance(closed, dict) and closed["state"] == "exited"
    grove.ok("shell", "close", sandbox, second)
    assert grove.ok("shell", "ls", sandbox, "--json").json() == []
    gone = grove.run("shell", "read", sandbox, first, "--json")
    assert gone.code != 0
    assert gone.json()["error"]["code"] == "shell_not_found"  # type: ignore[index]


def test_shell_exit_status_and_custom_shell(grove: Grove, sandbox: str) -> None:
    shell = grove.ok("shell", "open", sandbox, "--shell", "sh").out.strip()
    grove.ok("shell", "write", sandbox, shell, "--input", "echo $0; exit 3")

    def read() -> dict[str, Any]:
        reply = grove.ok("shell", "read", sandbox, shell, "--json", "--wait-ms", "1000").json()
        assert isinstance(reply, dict)
        return reply

    reply = wait_for(read, 60, f"shell {shell} to exit",
                     ready=lambda r: r["state"] == "exited", interval=0)  # fmt: skip
    assert "sh" in reply["output"]
    listed = grove.ok("shell", "ls", sandbox, "--json").json()
    assert [s["exit_code"] for s in listed if s["shell_id"] == shell] == [3]  # type: ignore[union-attr]
    refused = grove.run("shell", "write", sandbox, shell, "--input", "true", "--json")
    assert refused.json()["error"]["code"] == "shell_exited"  # type: ignore[index]


def test_shell_input_errors(grove: Grove, sandbox: str) -> None:
    def error(*args: str) -> dict[str, str]:
        result = grove.run(*args, "--json")
        assert result.code != 0, args
        data = result.json()
        assert isinstance(data, dict) and set(data) == {"error"}
        assert data["error"]["message"] and data["error"]["remedy"]
        return data["error"]  # type: ignore[no-any-return]

    assert error("shell", "open", "sb-nope")["code"] == "sandbox_not_found"
    assert error("shell", "open", sandbox, "--cols", "0")["code"] == "invalid_argument"
    assert error("shell", "open", sandbox, "--cwd", "/no/such/dir")["code"] == "bad_cwd"
    assert error("shell", "open", sandbox, "--shell", "no-such-shell")["code"] == (
        "command_not_found"
    )
    assert error("shell", "read", sandbox, "sh-000000")["code"] == "shell_not_found"
    assert error("shell", "signal", sandbox, "sh-000000", "--signal", "WINCH")["code"] == (
        "invalid_argument"
    )
    assert error("shell", "read", sandbox, "sh-000000", "--cursor", "-1")["code"] == (
        "invalid_argument"
    )
    # The interactive form needs a terminal; scripts are pointed at the verbs.
    piped = grove.run("shell", sandbox)
    assert piped.code != 0
    assert piped.err.startswith("error: grove shell needs a terminal")
    assert "grove shell open" in piped.err


@pytest.mark.timeout(300)
def test_exec_ctrl_c_interrupts_the_guest_process(grove: Grove, sandbox: str) -> None:
    proc = grove.popen("sandbox", "exec", sandbox, "--", "sleep", "30")
    _wait_running(grove, sandbox, "sleep")
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)  # what a terminal's Ctrl+C does to the CLI
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert time.monotonic() - started < 20
    assert grove.run("sandbox", "exec", sandbox, "--", "pgrep", "-x", "sleep").code == 1
