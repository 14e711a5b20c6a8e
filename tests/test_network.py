"""Network policies on real VMs, real namespaces and real nftables.

The "outside world" is a TCP server in a namespace each test makes itself (bench/networld.py);
a denied destination is a second such namespace that exists but is not allowed. Nothing is
ever sent to an address outside those namespaces.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ENV, Grove, network_leftovers

from bench.networld import PORT, World, connect_script, wait_for, world

pytestmark = pytest.mark.vm

HTTP_SERVER = ["python3", "-m", "http.server", "8000", "--bind", "0.0.0.0", "--directory", "/etc"]


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, World]]:
    """World A (the one tests allow) and world B (one that exists but is not allowed)."""
    tmp = tmp_path_factory.mktemp("worlds")
    with world(tmp, 0) as a, world(tmp, 1) as b:
        yield a, b


def connects(grove: Grove, sandbox: str, address: str, port: int = PORT) -> bool:
    result = grove.run("sandbox", "exec", sandbox, "--", "python3", "-c",
                       connect_script(address, port), timeout=120)  # fmt: skip
    assert result.code in (0, 3), f"guest check failed oddly: {result.err or result.out}"
    return result.code == 0 and "hello" in result.out


def network(grove: Grove, sandbox: str, *args: str) -> dict[str, Any]:
    info = grove.ok("sandbox", "network", sandbox, "--json", *args).json()
    assert isinstance(info, dict)
    return info


def create(grove: Grove, *options: str) -> str:
    return str(grove.ok("sandbox", "create", ENV, *options).out.strip())


def test_run_off_cannot_connect_while_egress_can(grove: Grove, worlds: tuple[World, World]) -> None:
    a, _ = worlds
    script = connect_script(a.address)
    off = grove.run("run", ENV, "--network", "off", "--", "python3", "-c", script, timeout=300)
    assert off.code == 3, f"--network off connected: {off.out} {off.err}"
    assert "cannot connect" in off.out
    # The engine saw its policy drop the attempt: the failure says so, with the remedy.
    assert "network policy 'off' blocked" in off.err and "--policy egress" in off.err
    egress = grove.run("run", ENV, "--network", "egress", "--", "python3", "-c", script,
                       timeout=300)  # fmt: skip
    assert egress.code == 0, f"--network egress failed: {egress.out} {egress.err}"
    assert f"hello {a.name}" in egress.out


def test_each_policy_applied_live_from_inside_a_vm(
    grove: Grove, worlds: tuple[World, World]
) -> None:
    a, b = worlds
    sid = create(grove)  # the engine's default: published, no egress
    try:
        info = network(grove, sid)
        assert info["policy"] == "published" and info["backend"] == "namespace"
        assert not connects(grove, sid, a.address)

        changed = network(grove, sid, "--policy", "egress")
        assert changed["policy"] == "egress" and changed["applied_ms"] is not None
        assert connects(grove, sid, a.address) and connects(grove, sid, b.address)

        network(grove, sid, "--policy", f"allow={a.address}:{PORT}")
        assert connects(grove, sid, a.address), "the allowed world is refused"
        assert not connects(grove, sid, b.address), "a world not allowed is reached"
        assert not connects(grove, sid, a.address, PORT + 1), "a port not allowed is reached"

        network(grove, sid, "--policy", "off")
        assert not connects(grove, sid, a.address)
        counted = network(grove, sid)
        # Traffic went both ways above; the counters are the host's, not guesses.
        assert counted["rx_bytes"] > 0 and counted["tx_bytes"] > 0
        listed = grove.ok("sandbox", "ls", "--json").json()
        assert {s["id"]: s["network"] for s in listed}[sid] == "off"
    finally:
        grove.run("sandbox", "terminate", sid)


def test_dns_answers_only_allowed_names(grove: Grove, worlds: tuple[World, World]) -> None:
    a, b = worlds
    (grove.home / "network-hosts").write_text(
        f"{a.address} world-a.test\n{b.address} world-b.test\n"
    )
    sid = create(grove, "--network", f"allow=world-a.test:{PORT}")
    try:
        info = network(grove, sid)
        assert info["pinned"] == [f"world-a.test={a.address}"]
        resolved = grove.run("sandbox", "exec", sid, "--", "getent", "hosts", "world-a.test")
        assert resolved.code == 0 and a.address in resolved.out
        refused = grove.run("sandbox", "exec", sid, "--", "getent", "hosts", "world-b.test")
        assert refused.code != 0, f"a name not allowed resolved: {refused.out}"
        assert connects(grove, sid, "world-a.test")
        assert not connects(grove, sid, b.address)
    finally:
        grove.run("sandbox", "terminate", sid)
        (grove.home / "network-hosts").unlink()


def _http_get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=10) as reply:
        return str(reply.read().decode())


def _reachable(port: int) -> bool:
    try:
        _http_get(port)
    except OSError:
        return False
    return True


def test_published_port_reaches_the_guest_only_while_policy_lets_it(grove: Grove) -> None:
    sid = create(grove)
    closed = create(grove, "--network", "off")
    try:
        info = grove.ok("service", "start", sid, "web", "--json", "--ready-http",
                        "http://127.0.0.1:8000/", "--ready-timeout-seconds", "120",
                        "--publish", "8000", "--", *HTTP_SERVER).json()  # fmt: skip
        [port] = info["published_ports"]
        hostname = grove.ok("sandbox", "exec", sid, "--", "hostname").out
        assert _http_get(port["host_port"]) == hostname
        network(grove, sid, "--policy", "off")
        assert not _reachable(port["host_port"]), "a published port answers with policy off"
        network(grove, sid, "--policy", "published")
        assert _http_get(port["host_port"]) == hostname

        refused = grove.run("service", "start", closed, "web", "--json", "--publish", "8000",
                            "--", *HTTP_SERVER)  # fmt: skip
        assert refused.code != 0
        error = refused.json()["error"]
        assert error["code"] == "network_off"
        assert "--policy published" in error["remedy"]
    finally:
        grove.run("sandbox", "terminate", sid)
        grove.run("sandbox", "terminate", closed)


#: Guest side of the fork test: one connection to world A, a line every 0.2 s; each outcome
#: appended to /tmp/client.log ("sent N" or "reset ...").
CLIENT = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.recv(100)
i = 0
while True:
    i += 1
    try:
        s.sendall(f"{socket.gethostname()} {i}\n".encode())
        s.recv(100)
        note = f"sent {i}"
    except OSError as exc:
        note = f"reset {type(exc).__name__}"
    with open("/tmp/client.log", "a") as f:
        f.write(note + "\n")
    if note.startswith("reset"):
        time.sleep(1000)
    time.sleep(0.2)
"""


def _client_log(grove: Grove, sid: str) -> list[str]:
    out = grove.run("sandbox", "exec", sid, "--", "cat", "/tmp/client.log").out
    return out.splitlines()


def test_fork_child_resets_the_parents_connection_and_the_parent_keeps_it(
    grove: Grove, worlds: tuple[World, World]
) -> None:
    a, _ = worlds
    parent = create(grove, "--network", "egress", "--name", "netparent")
    children: list[str] = []
    try:
        grove.ok("service", "start", parent, "client", "--", "python3", "-c", CLIENT,
                 a.address, str(PORT))  # fmt: skip
        wait_for(lambda: any(line.startswith("sent") for line in _client_log(grove, parent)),
                 60, "the parent's client to talk")  # fmt: skip
        forked = grove.ok("sandbox", "fork", parent, "--name", "netchild", "--json").json()
        children = [c["id"] for c in forked["children"]]
        child = children[0]
        assert network(grove, child)["policy"] == "egress", "a child inherits its policy"
        wait_for(lambda: any(line.startswith("reset") for line in _client_log(grove, child)),
                 60, "the child's copy of the connection to be reset")  # fmt: skip
        sent_before = len(a.received())
        wait_for(lambda: len(a.received()) > sent_before + 5, 30, "the parent to go on")
        assert not any(line.startswith("reset") for line in _client_log(grove, parent))
        senders = {line.split()[1] for line in a.received()}
        assert "netparent" in senders
        assert not {s for s in senders if s.startswith("netchild")}, "the child's copy got out"
    finally:
        for sid in [*children, parent]:
            grove.run("sandbox", "terminate", sid)


def _slots(home: Path) -> list[str]:
    import sqlite3

    db = sqlite3.connect(f"file:{home / 'grove.db'}?mode=ro", uri=True)
    try:
        return [r[0] for r in db.execute("SELECT owner FROM net_slots")]
    finally:
        db.close()


def _listed(grove: Grove) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in grove.ok("sandbox", "ls", "--json").json()}


def _kill_engine(grove: Grove) -> None:
    pid = grove.engine_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: grove.engine_pid() is None, 30, "the engine to die")


def test_nothing_of_a_network_is_left_after_terminate_or_a_killed_engine(
    fresh_grove: Grove, worlds: tuple[World, World]
) -> None:
    g = fresh_grove
    a, _ = worlds
    g.env["GROVE_POOL_SIZE"] = "0"
    sid = create(g, "--network", "egress")
    info = g.ok("service", "start", sid, "web", "--json", "--ready-http",
                "http://127.0.0.1:8000/", "--ready-timeout-seconds", "120",
                "--publish", "8000", "--", *HTTP_SERVER).json()  # fmt: skip
    host_port = info["published_ports"][0]["host_port"]
    assert connects(g, sid, a.address)

    # The engine dies: the VM and its namespace outlive it, the next engine adopts both and
    # starts the resolver and the published port's proxy again (same host port).
    _kill_engine(g)
    assert connects(g, sid, a.address), "the adopted sandbox lost its network"
    assert _reachable(host_port), "the published port did not come back after a restart"

    g.ok("sandbox", "terminate", sid)
    assert _slots(g.home) == []
    assert [x for x in network_leftovers(g.home) if not x.startswith("nft")] == []

    # The engine dies, and the VM with it while no engine runs: the next one removes the
    # namespace, link, chain and slot nobody owns any more.
    sid = create(g, "--network", "egress")
    pid = int(_listed(g)[sid]["pid"])
    _kill_engine(g)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 30, "the VM to die")
    assert any(x.startswith("netns") for x in network_leftovers(g.home))
    assert _listed(g)[sid]["phase"] == "failed"
    assert _slots(g.home) == []
    assert [x for x in network_leftovers(g.home) if not x.startswith("nft")] == []
    table = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    assert "slot_" not in _table_of(table, g.home)


def _table_of(ruleset: str, home: Path) -> str:
    from engine.config import Paths
    from engine.net.slots import home_tag

    name = f"table inet grove_{home_tag(Paths(home))}"
    start = ruleset.find(name)
    return "" if start < 0 else ruleset[start : ruleset.find("\ntable ", start + 1)]


def test_user_mode_backend_without_namespaces(
    fresh_grove: Grove, worlds: tuple[World, World]
) -> None:
    """What a non-root engine uses: QEMU user-mode networking, restrict=on unless egress."""
    g = fresh_grove
    a, _ = worlds
    g.env["GROVE_NETWORK_BACKEND"] = "user"
    g.ok("engine", "start")
    assert g.ok("engine", "status", "--json").json()["network_backend"] == "user"
    closed = create(g)
    open_ = create(g, "--network", "egress")
    assert network(g, closed)["backend"] == "user"
    assert not connects(g, closed, a.address)
    assert connects(g, open_, a.address)
    assert network(g, open_)["rx_bytes"] is None, "user mode has no counters: no datum"

    refused = g.run("sandbox", "create", ENV, "--network", f"allow={a.address}", "--json")
    assert refused.code != 0 and refused.json()["error"]["code"] == "network_needs_root"
    live = g.run("sandbox", "network", closed, "--policy", "egress", "--json")
    assert live.code != 0 and live.json()["error"]["code"] == "network_needs_restart"
    assert network(g, closed, "--policy", "off")["policy"] == "off"
    assert not [x for x in network_leftovers(g.home) if not x.startswith("nft")]


def test_host_socket_reaches_nothing_in_a_sandbox_namespace(grove: Grove) -> None:
    """Ingress is only what is published: the sandbox's namespace address answers nothing."""
    sid = create(grove, "--network", "egress")
    try:
        info = network(grove, sid)
        address = info["host_address"]
        assert address.startswith("10.199.")
        with socket.socket() as sock:
            sock.settimeout(2)
            started = time.monotonic()
            assert sock.connect_ex((address, 22)) != 0
            assert time.monotonic() - started < 5
    finally:
        grove.run("sandbox", "terminate", sid)
