"""Bad input gets a one-line cause and a remedy, a non-zero exit, and {code,message,remedy}."""

from __future__ import annotations

import os
import sys

import pytest
from conftest import ENV, Grove


def _json_error(grove: Grove, *args: str) -> dict[str, str]:
    # --json belongs to grove, so it goes before any '--' that starts the guest command.
    own = list(args)
    cut = own.index("--") if "--" in own else len(own)
    result = grove.run(*own[:cut], "--json", *own[cut:])
    assert result.code != 0, f"expected failure: {args}"
    assert result.out.startswith("{"), f"not JSON: out={result.out!r} err={result.err!r}"
    data = result.json()
    assert isinstance(data, dict) and set(data) == {"error"}, result.out
    error = data["error"]
    assert {"code", "message", "remedy"} <= set(error)
    assert error["message"] and error["remedy"]
    return error


def _human_error(grove: Grove, *args: str) -> str:
    result = grove.run(*args)
    assert result.code != 0
    lines = result.err.strip().splitlines()
    assert lines[0].startswith("error: ") and "Traceback" not in result.err
    assert any(line.strip().startswith("remedy:") for line in lines)
    return result.err


def test_unknown_environment(grove: Grove) -> None:
    assert _json_error(grove, "sandbox", "create", "nosuch:1")["code"] == "environment_not_found"
    assert "debian:12" in _human_error(grove, "sandbox", "create", "nosuch:1")
    assert _json_error(grove, "env", "pull", "nosuch:1")["code"] == "environment_not_found"


def test_unknown_and_terminated_ids(grove: Grove) -> None:
    for verb in ("exec", "stop", "start", "terminate"):
        extra = ["--", "true"] if verb == "exec" else []
        error = _json_error(grove, "sandbox", verb, "sb-00000000", *extra)
        assert error["code"] == "sandbox_not_found", verb


def test_command_missing_after_separator(grove: Grove, sandbox: str) -> None:
    assert _json_error(grove, "sandbox", "exec", sandbox)["code"] == "invalid_argument"
    assert _json_error(grove, "sandbox", "exec", sandbox, "--")["code"] == "invalid_argument"
    assert _json_error(grove, "run", ENV)["code"] == "invalid_argument"


@pytest.mark.parametrize(
    "args",
    [("--vcpus", "0"), ("--vcpus", "99"), ("--mem-mib", "16"), ("--mem-mib", "999999")],
)
def test_invalid_sizes(grove: Grove, args: tuple[str, str]) -> None:
    error = _json_error(grove, "sandbox", "create", ENV, *args)
    assert error["code"] == "invalid_argument" and "--" in error["remedy"]


def test_invalid_names_env_and_timeout(grove: Grove, sandbox: str) -> None:
    assert _json_error(grove, "sandbox", "create", ENV, "--name", "Bad Name!")["code"] == (
        "invalid_argument"
    )
    bad_env = _json_error(grove, "sandbox", "exec", sandbox, "--env", "NOEQUALS", "--", "true")
    assert bad_env["code"] == "invalid_argument" and "--env" in bad_env["remedy"]
    bad_timeout = _json_error(grove, "sandbox", "exec", sandbox, "--timeout", "-1", "--", "true")
    assert bad_timeout["code"] == "invalid_argument"
    usage = _json_error(grove, "sandbox", "create", ENV, "--vcpus", "many")
    assert usage["code"] == "usage"


def test_command_not_found_in_guest(grove: Grove, sandbox: str) -> None:
    result = grove.run("sandbox", "exec", sandbox, "--", "no-such-binary")
    assert result.code == 125
    assert "no-such-binary" in result.err and "remedy" in result.err
    assert (
        _json_error(grove, "sandbox", "exec", sandbox, "--cwd", "/nope", "--", "true")["code"]
        == "bad_cwd"
    )


def test_engine_unreachable(fresh_grove: Grove) -> None:
    fresh_grove.env["GROVE_HOME"] = "/proc/grove-cannot-exist"
    error = _json_error(fresh_grove, "sandbox", "ls")
    assert error["code"] == "engine_unreachable"
    status = fresh_grove.run("engine", "status", "--json")
    assert status.code == 3 and status.json()["running"] is False  # type: ignore[index]


def test_qemu_missing(fresh_grove: Grove) -> None:
    # An engine whose PATH has no QEMU: creating must say what to install.
    bindir = fresh_grove.home / "bin"
    bindir.mkdir()
    os.symlink(sys.executable, bindir / "python3")
    fresh_grove.env["PATH"] = str(bindir)
    error = _json_error(fresh_grove, "sandbox", "create", ENV)
    assert error["code"] == "qemu_missing"
    assert "apt-get install qemu-system-x86" in error["remedy"]
    doctor = fresh_grove.run("doctor", "--json")
    assert doctor.code != 0
    checks = {c["name"]: c for c in doctor.json()["checks"]}  # type: ignore[index]
    assert checks["qemu"]["status"] == "fail"


def test_ui_hosts_are_checked_before_the_dashboard_opens(fresh_grove: Grove) -> None:
    error = _json_error(fresh_grove, "ui", "--host", "nosuch")
    assert error["code"] == "host_not_found" and "nosuch" in error["message"], error
    assert "grove host add" in error["remedy"]
    assert "invalid host" in _human_error(fresh_grove, "ui", "--host", "ssh://")
    assert "empty --host" in _human_error(fresh_grove, "ui", "--host", " ")
