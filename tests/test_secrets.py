"""Secrets on real VMs: given at create, delivered as guest files and per call as variables,
and redacted from everything Grove says or writes. The session is scripted through the real
CLI; at its end the whole GROVE_HOME, the engine log and every CLI output are searched for the
values: zero hits."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ENV, Grove, Result
from waiting import wait_for

from engine.config import Paths

pytestmark = pytest.mark.timeout(600)


class Session:
    """Every CLI call of the session, kept so its output can be searched at the end."""

    def __init__(self, grove: Grove) -> None:
        self.grove = grove
        self.outputs: list[str] = []

    def run(self, *args: str, env: dict[str, str] | None = None) -> Result:
        if env:
            saved = dict(self.grove.env)
            self.grove.env.update(env)
            try:
                result = self.grove.run(*args)
            finally:
                self.grove.env.clear()
                self.grove.env.update(saved)
        else:
            result = self.grove.run(*args)
        self.outputs += [result.out, result.err]
        return result

    def ok(self, *args: str, env: dict[str, str] | None = None) -> Result:
        result = self.run(*args, env=env)
        assert result.code == 0, f"grove {' '.join(args)} failed: {result.err or result.out}"
        return result

    def json(self, *args: str, env: dict[str, str] | None = None) -> Any:
        return json.loads(self.ok(*args, "--json", env=env).out)


def _hits(root: Path, values: list[bytes]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        found += [f"{path}: {v[:4]!r}..." for v in values if v in data]
    return found


def test_secrets_are_delivered_per_call_and_redacted_everywhere(
    grove: Grove, tmp_path: Path
) -> None:
    token = "tok-" + secrets.token_hex(12)
    from_file = "file-" + secrets.token_hex(12)
    from_env = "env-" + secrets.token_hex(12)
    # A value holding another: the longer one is hidden whole.
    long_one = token + "-and-more"
    values = [token, from_file, from_env, long_one]
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(from_file + "\n")
    s = Session(grove)

    # Bad input fails before anything is made.
    before = {x["id"] for x in s.json("sandbox", "ls")}
    for bad in (["--secret", "1BAD=x"], ["--secret", "EMPTY="], ["--secret", "NOT_IN_ENV"],
                ["--secret-file", f"F={tmp_path / 'missing'}"]):  # fmt: skip
        failed = s.run("sandbox", "create", ENV, *bad, "--json")
        assert failed.code != 0
        error = json.loads(failed.out)["error"]
        assert error["code"] == "invalid_argument" and error["remedy"], error
    assert {x["id"] for x in s.json("sandbox", "ls")} == before, "a bad secret created something"

    created = s.json(
        "sandbox", "create", ENV, "--name", "sec-src",
        "--secret", f"API_TOKEN={token}", "--secret", f"LONG={long_one}",
        "--secret-file", f"FROM_FILE={secret_file}", "--secret", "FROM_ENV",
        env={"FROM_ENV": from_env},
    )  # fmt: skip
    sid = created["id"]
    assert created["secret_names"] == ["API_TOKEN", "FROM_ENV", "FROM_FILE", "LONG"]

    # No secret is in a command's environment unless the call asks for it.
    plain = s.ok("sandbox", "exec", sid, "--", "sh", "-c", 'echo "token is [$API_TOKEN]"; env')
    assert "token is []" in plain.out and "API_TOKEN" not in plain.out
    asked = s.ok("sandbox", "exec", sid, "--secret-env", "API_TOKEN", "--secret-env",
                 "FROM_FILE=MYVAR", "--", "sh", "-c",
                 'echo "token is $API_TOKEN / $MYVAR"')  # fmt: skip
    assert asked.out.strip() == "token is [REDACTED] / [REDACTED]"
    # Split across two output chunks, written 300 ms apart; on stderr too; the longest first.
    half = len(token) // 2
    split = s.ok("sandbox", "exec", sid, "--", "sh", "-c",
                 f"printf %s {token[:half]}; sleep 0.3; printf '%s\\n' {token[half:]}; "
                 f"echo {long_one} >&2")  # fmt: skip
    assert split.out == "[REDACTED]\n" and split.err.strip() == "[REDACTED]", split
    # Files in the guest: 0600 in a 0700 directory on tmpfs.
    listing = s.ok("sandbox", "exec", sid, "--", "sh", "-c",
                   "stat -c '%a %n' /run/grove/secrets /run/grove/secrets/*; "
                   "stat -f -c %T /run/grove/secrets; "
                   "cat /run/grove/secrets/FROM_ENV").out  # fmt: skip
    assert "700 /run/grove/secrets\n" in listing and "600 /run/grove/secrets/API_TOKEN" in listing
    assert "tmpfs" in listing and listing.rstrip().endswith("[REDACTED]")
    # In an error message.
    failed = s.run("sandbox", "exec", sid, "--cwd", f"/nowhere-{token}", "--json", "--", "true")
    error = json.loads(failed.out)["error"]
    assert failed.code != 0 and "[REDACTED]" in error["message"], error
    missing = s.run("sandbox", "exec", sid, "--secret-env", "NOPE", "--json", "--", "true")
    error = json.loads(missing.out)["error"]
    assert error["code"] == "secret_not_found" and "API_TOKEN" in error["message"], error

    # A service that prints it, at start and while it runs.
    s.ok("service", "start", sid, "printer", "--secret-env", "API_TOKEN", "--", "sh", "-c",
         'echo "starting with $API_TOKEN"; '
         'while true; do echo "tick $API_TOKEN"; sleep 0.5; done')  # fmt: skip

    def logged() -> list[str] | None:
        lines = [x["text"] for x in s.json("service", "logs", sid, "printer")["lines"]]
        return lines if any(t.startswith("tick") for t in lines) else None

    lines = wait_for(logged, 60, "the service's lines")
    assert lines is not None
    assert "starting with [REDACTED]" in lines and "tick [REDACTED]" in lines, lines

    # A shell given it by name.
    shell = s.json("shell", "open", sid, "--secret-env", "FROM_ENV=PASSWORD")["shell_id"]
    s.ok("shell", "write", sid, shell, "--input", 'echo "pw=$PASSWORD"')

    def shell_said() -> str | None:
        text = s.json("shell", "read", sid, shell)["output"]
        return text if "pw=[REDACTED]" in text else None

    wait_for(shell_said, 60, "the shell's echo")
    s.ok("shell", "close", sid, shell)

    # Forks: only when allowed; the children keep the secrets (and their redaction).
    refused = s.run("sandbox", "fork", sid, "--json")
    assert json.loads(refused.out)["error"]["code"] == "has_secrets"
    forked = s.json("sandbox", "fork", sid, "--allow-secrets")
    child = forked["children"][0]
    assert child["secret_names"] == created["secret_names"]
    out = s.ok("sandbox", "exec", child["id"], "--secret-env", "API_TOKEN", "--", "sh", "-c",
               'echo "child $API_TOKEN"; cat /run/grove/secrets/LONG').out  # fmt: skip
    assert out == "child [REDACTED]\n[REDACTED]", out
    s.ok("snapshot", "create", sid, "sec-snap")
    listed = {x["name"]: x for x in s.json("snapshot", "ls")}
    assert listed["sec-snap"]["secret_names"] == created["secret_names"]
    assert "API_TOKEN" in s.ok("snapshot", "ls").out

    # Host side: 0600 files in a 0700 directory, on tmpfs; wiped at terminate.
    vault = Paths(grove.home).secrets_dir
    assert oct(vault.stat().st_mode & 0o777) == "0o700"
    assert oct((vault / sid / "API_TOKEN").stat().st_mode & 0o777) == "0o600"
    assert subprocess.run(["stat", "-f", "-c", "%T", str(vault)], capture_output=True,
                          text=True).stdout.strip() == "tmpfs"  # fmt: skip
    s.ok("sandbox", "terminate", child["id"])
    s.ok("sandbox", "terminate", sid)
    s.ok("snapshot", "rm", "sec-snap")
    assert not (vault / sid).exists() and not (vault / child["id"]).exists()

    # Zero hits: the whole home (database and its WAL, logs, templates), the engine log, and
    # everything the CLI printed.
    time.sleep(0.5)  # the engine's log handler flushes per record; let the last ones land
    raw = [v.encode() for v in values]
    assert _hits(grove.home, raw) == []
    log = (grove.home / "engine.log").read_bytes()
    assert not any(v in log for v in raw)
    printed = "\n".join(s.outputs)
    assert not [v for v in values if v in printed]
    assert "[REDACTED]" in printed
    assert os.environ.get("FROM_ENV") is None  # the test never leaked it into its own env
