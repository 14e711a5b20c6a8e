"""Secrets without a VM: redaction of text and of streams split anywhere, the vault's files,
names and values checked, the engine log and events redacted, and the CLI failing on bad
secrets before it reaches an engine."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import GroveError
from engine.sandbox.events import EventLog
from engine.secrets import spec
from engine.secrets.redact import MARK, Redactor, install_log_filter
from engine.secrets.vault import Vault
from engine.store.db import Store

REPO = Path(__file__).resolve().parent.parent
VALUES = ["supersecret123", "abc", "abcdef", "xyzabc"]


def redactor() -> Redactor:
    r = Redactor()
    r.add("sb-1", VALUES)
    return r


def test_text_is_redacted_longest_first() -> None:
    r = redactor()
    assert r.text("a supersecret123 abcdef abc xyzabcdef") == (f"a {MARK} {MARK} {MARK} {MARK}def")
    assert r.data(b"--abcdef--") == f"--{MARK}--".encode()
    assert r.value({"argv": ["echo", "abc"], "n": 3}) == {"argv": ["echo", MARK], "n": 3}
    r.drop("sb-1")
    assert r.text("abc") == "abc" and not r.active


def test_a_stream_split_at_any_two_points_is_redacted_as_a_whole() -> None:
    r = redactor()
    text = b"x supersecret123 abcdef abc ab xyzab supersecre xyzabcdef"
    expected = r.data(text)
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            stream = r.stream()
            got = stream.feed(text[:i]) + stream.feed(text[i:j]) + stream.feed(text[j:])
            assert got + stream.flush() == expected, (i, j)


def test_a_stream_holds_back_only_what_may_begin_a_secret() -> None:
    stream = redactor().stream()
    assert stream.feed(b"line one\n") == b"line one\n" and not stream.holding
    assert stream.feed(b"typed sup") == b"typed " and stream.holding
    assert stream.flush() == b"sup"  # an idle flush shows the held bytes as they are
    assert stream.feed(b"ersecret123\n") == b"ersecret123\n"


def test_the_vault_keeps_0600_files_in_a_0700_dir_and_wipes_them(tmp_path: Path) -> None:
    vault = Vault(tmp_path / "vault")
    digests = vault.put("sb-1", {"API_TOKEN": "supersecret123", "B": "b-value"})
    assert set(digests) == {"API_TOKEN", "B"}
    assert all("supersecret123" not in d for d in digests.values())
    assert oct((tmp_path / "vault").stat().st_mode & 0o777) == "0o700"
    assert oct((tmp_path / "vault" / "sb-1").stat().st_mode & 0o777) == "0o700"
    path = tmp_path / "vault" / "sb-1" / "API_TOKEN"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert vault.read("sb-1") == {"API_TOKEN": "supersecret123", "B": "b-value"}
    vault.copy("sb-1", "sb-2")
    assert vault.owners() == ["sb-1", "sb-2"]
    with open(path, "rb") as held:  # the data a reader still holds open is overwritten
        vault.wipe("sb-1")
        assert held.read() == b"\0" * len("supersecret123")
    assert not path.exists() and vault.owners() == ["sb-2"]
    with pytest.raises(ValueError):
        vault.read("../escape")


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"1BAD": "x"}, "invalid secret name"),
        ({"A" * 65: "x"}, "invalid secret name"),
        ({"EMPTY": ""}, "is empty"),
        ({"NUL": "a\0b"}, "NUL"),
        ({"BIG": "x" * (64 * 1024 + 1)}, "over 64 KiB"),
        ({f"S{i}": "v" for i in range(65)}, "at most 64"),
    ],
)
def test_bad_secrets_are_refused_without_echoing_values(
    values: dict[str, str], needle: str
) -> None:
    with pytest.raises(GroveError) as caught:
        spec.validate_values(values)
    assert caught.value.code == "invalid_argument" and needle in caught.value.message
    for value in values.values():
        if len(value) > 3:
            assert value not in caught.value.message


def test_secret_env_names_known_secrets_only() -> None:
    known = ["API_TOKEN", "OTHER"]
    wanted = spec.parse_secret_env(["API_TOKEN", "OTHER=PASSWORD"], known)
    assert wanted == {"API_TOKEN": "API_TOKEN", "PASSWORD": "OTHER"}
    with pytest.raises(GroveError) as caught:
        spec.parse_secret_env(["NOPE"], known)
    assert caught.value.code == "secret_not_found" and "API_TOKEN, OTHER" in caught.value.message
    with pytest.raises(GroveError):
        spec.parse_secret_env(["API_TOKEN=1X"], known)


def test_the_engine_log_is_redacted(tmp_path: Path) -> None:
    r = redactor()
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    root = logging.getLogger()
    root.addHandler(handler)
    undo = install_log_filter(r)
    try:
        logging.getLogger("grove.test").warning("value %s in args", "supersecret123")
        try:
            raise RuntimeError("boom abcdef")
        except RuntimeError:
            logging.getLogger("grove.test").exception("failed with abc")
    finally:
        undo()
        root.removeHandler(handler)
    text = sink.getvalue()
    assert "supersecret123" not in text and "abcdef" not in text and "abc" not in text
    assert text.count(MARK) >= 3 and "RuntimeError" in text


def test_events_are_stored_redacted(tmp_path: Path) -> None:
    store = Store(tmp_path / "grove.db")
    events = EventLog(store, redactor())
    asyncio.run(events.emit("sb-1", "exec_started", argv=["supersecret123"]))
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"supersecret123" not in raw


@pytest.mark.parametrize(
    "args",
    [
        ["sandbox", "create", "--json", "debian:12", "--secret", "1BAD=x"],
        ["sandbox", "create", "--json", "debian:12", "--secret", "EMPTY="],
        ["sandbox", "create", "--json", "debian:12", "--secret", "UNSET_IN_ENV_9"],
        ["sandbox", "create", "--json", "debian:12", "--secret-file", "F=/nonexistent/file"],
        ["sandbox", "exec", "--json", "sb-x", "--secret-env", "2X", "--", "true"],
        ["shell", "open", "--json", "sb-x", "--secret-env", "A=1B"],
        ["service", "start", "--json", "sb-x", "svc", "--secret-env", "-", "--", "true"],
        ["run", "--json", "debian:12", "--secret", "=novalue", "--", "true"],
    ],
)
def test_the_cli_refuses_bad_secrets_before_any_engine(tmp_path: Path, args: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROVE_")}
    env["GROVE_HOME"] = str(tmp_path / "no-engine")  # no engine: only the CLI can answer
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli.main", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert '"invalid_argument"' in proc.stdout, proc.stdout + proc.stderr
    assert "novalue" not in proc.stdout
    assert not (tmp_path / "no-engine" / "engine.sock").exists(), "an engine was started"
