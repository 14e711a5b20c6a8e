"""Which engines `grove ui` shows: --host (repeatable), --all-hosts, and the default; no VM."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.cli.main import build_parser
from engine.cli.ui_cmd import host_names
from engine.client.hosts import HostBook
from engine.errors import GroveError


def names(argv: list[str]) -> list[str]:
    args = build_parser().parse_args(argv)
    return host_names(SimpleNamespace(args=args))  # type: ignore[arg-type]


@pytest.fixture
def book(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HostBook:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    hosts = HostBook({}, None)
    hosts.hosts.update({"kvm-2": "ssh://root@kvm-2", "kvm-1": "ssh://root@kvm-1"})
    hosts.save()
    return hosts


def test_repeated_hosts_in_order_and_once(book: HostBook) -> None:
    assert names(["ui", "--host", "kvm-2", "--host", "local", "--host", "kvm-2"]) == [
        "kvm-2",
        "local",
    ]
    # A --host before the verb counts too, first.
    assert names(["--host", "kvm-1", "ui", "--host", "kvm-2"]) == ["kvm-1", "kvm-2"]
    assert names(["ui"]) == []  # the default engine (GROVE_HOST, 'host use', or local)


def test_all_hosts_is_this_machine_and_every_name(book: HostBook) -> None:
    assert names(["ui", "--all-hosts"]) == ["local", "kvm-1", "kvm-2"]
    assert names(["ui", "--all-hosts", "--host", "ssh://me@lab"]) == [
        "local",
        "kvm-1",
        "kvm-2",
        "ssh://me@lab",
    ]


def test_an_empty_host_is_refused(book: HostBook) -> None:
    with pytest.raises(GroveError) as caught:
        names(["ui", "--host", "  "])
    assert caught.value.code == "invalid_argument" and caught.value.remedy


def test_ui_parser_keeps_other_verbs_single_host() -> None:
    args = build_parser().parse_args(["ps", "--host", "kvm-1"])
    assert isinstance(args, argparse.Namespace) and args.host == "kvm-1"
