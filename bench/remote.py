"""The engine through SSH against the same engine on its unix socket, in the same run: PTY key
-> echo, `exec true` round trip, and connect (SSH handshake + engine discovery + first RPC).

The far side is this host's own engine behind a real OpenSSH server on 127.0.0.1, reached
with `ssh://root@127.0.0.1:PORT/...engine.sock`: both paths talk to the same engine and the
same sandbox, so the difference is the transport alone.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bench.harness import Series, engine_paths
from bench.shells import ShellStream, _echo_latency
from bench.sshd import GROVE, Sshd
from engine.client import Grove
from engine.client.hosts import parse_url

ENV = "debian:12"


def _exec_series(client: Grove, sandbox: str, name: str, rounds: int) -> Series:
    series = Series(name)
    client.exec(sandbox, ["true"])  # warm: the first command in a restore translates code
    for _ in range(rounds):
        started = time.perf_counter()
        assert client.exec(sandbox, ["true"]).exit_code == 0
        series.add((time.perf_counter() - started) * 1000)
    return series


def _echo_series(client: Grove, sandbox: str, name: str, keys: int) -> Series:
    series = Series(name)
    shell = ShellStream(client, sandbox)
    try:
        shell.wait_for(b"# ", 0, timeout=60)
        _echo_latency(shell, series, keys)
    finally:
        shell.detach()
    return series


def run(client: Grove, rounds: int) -> list[dict[str, Any]]:
    paths = engine_paths(client)
    sshd = Sshd.start(forwarding=True)
    saved_home = os.environ.get("HOME")
    os.environ["HOME"] = str(sshd.home)  # the client's ~/.ssh trusts this server
    target = parse_url(sshd.url(paths.home, GROVE))
    sandbox = client.create(ENV).id
    try:
        connect = Series("ssh: connect (handshake + discovery + first RPC)", target_ms=1000)
        for _ in range(max(3, rounds // 2)):
            started = time.perf_counter()
            with Grove.connect(host=target) as remote:
                remote.status()
                connect.add((time.perf_counter() - started) * 1000)
        keys = max(rounds * 10, 50)
        with Grove.connect(host=target) as remote:
            exec_local = _exec_series(client, sandbox, "exec true, local socket", rounds * 3)
            exec_ssh = _exec_series(remote, sandbox, "exec true, through ssh", rounds * 3)
            echo_local = _echo_series(client, sandbox, "shell key -> echo, local socket", keys)
            echo_ssh = _echo_series(remote, sandbox, "shell key -> echo, through ssh", keys)
    finally:
        client.terminate(sandbox)
        if saved_home is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = saved_home
        sshd.stop()
    results = [s.summary() for s in (connect, exec_local, exec_ssh, echo_local, echo_ssh)]

    def ratio(name: str, num: Series, den: Series, target: float) -> dict[str, Any]:
        a, b = num.summary()["p50_ms"], den.summary()["p50_ms"]
        value = round(a / b, 2) if a and b else None
        ok = None if value is None else value <= target
        return {"name": name, "ratio": value, "target_ms": target, "meets_target": ok}

    results.append(ratio("exec true: ssh / local (<=)", exec_ssh, exec_local, 1.5))
    results.append(ratio("key -> echo: ssh / local (<=)", echo_ssh, echo_local, 3.0))
    return results
