"""Bad input gets a one-line cause and a remedy, a non-zero exit, and {code,message,remedy}."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ENV, REPO, Grove

from engine.errors import GroveError


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


@pytest.fixture
def offline(tmp_path: Path) -> Iterator[Grove]:
    """The CLI with no engine it could reach or start: what fails here failed before any call."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROVE_")}
    env["GROVE_HOME"] = "/proc/grove-cannot-exist"
    env["PYTHONPATH"] = str(REPO)
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    yield Grove(tmp_path, env)


@pytest.mark.parametrize(
    "args",
    [
        ("sandbox", "create", ENV, "--network", "bogus"),
        ("sandbox", "create", "--from-snapshot", "base", "--network", "allow="),
        ("run", ENV, "--network", "allow=bad_host!", "--", "true"),
        ("sandbox", "fork", "sb-00000000", "--network", "allow=10.0.0.1:99999"),
    ],
    ids=["create", "create-from-snapshot", "run", "fork"],
)
def test_bad_network_policy_fails_before_any_engine_call(
    offline: Grove, args: tuple[str, ...]
) -> None:
    error = _json_error(offline, *args)
    assert error["code"] == "invalid_argument", error  # not engine_unreachable: no call made
    result = offline.run(*args)
    assert result.code == (125 if args[0] == "run" else 1)
    lines = result.err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ")  # one line of cause
    assert lines[1].strip().startswith("remedy: ") and "Traceback" not in result.err


@pytest.mark.parametrize(
    "policy", ["", " ", "bogus", "allow=", "allow=a,,b", "allow=[::1", "allow=x:0", "allow=-a"]
)
def test_policy_argument_refusals_name_the_flag(policy: str) -> None:
    from engine.cli.net_cmds import policy_arg

    for flag in ("--network", "--policy"):
        with pytest.raises(GroveError) as caught:
            policy_arg(policy, flag)
        error = caught.value
        assert error.code == "invalid_argument" and error.message and error.remedy
        other = "--policy" if flag == "--network" else "--network"
        assert other not in error.remedy
    assert policy_arg(None) == ""  # not given: the engine's default, or a fork's inheritance
    assert policy_arg("allow=b.org:443,b.org:443, 10.0.0.0/8") == "allow=b.org:443,10.0.0.0/8"


def test_sandbox_network_refuses_a_bad_policy_before_any_engine_call(offline: Grove) -> None:
    error = _json_error(offline, "sandbox", "network", "sb-00000000", "--policy", "bogus")
    assert error["code"] == "invalid_argument" and "bogus" in error["message"]
    assert "--policy" in error["remedy"] and "--network" not in error["remedy"]
    assert "bogus" in _human_error(
        offline, "sandbox", "network", "sb-00000000", "--policy", "bogus"
    )
    usage = _json_error(offline, "sandbox", "network", "--policy", "egress")
    assert usage["code"] == "usage"  # no ID
    # A good policy gets as far as the engine, which is not there.
    reached = _json_error(offline, "sandbox", "network", "sb-00000000", "--policy", "egress")
    assert reached["code"] == "engine_unreachable"
