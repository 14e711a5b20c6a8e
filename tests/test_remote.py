"""Remote engines over SSH: a real OpenSSH server on 127.0.0.1 in front of a second real
engine with its own GROVE_HOME, reached with `--host ssh://...` as a user on another machine
would. The remote engine is started on demand by the client's discovery step."""

from __future__ import annotations

import json
import os
import sys
import time

import pexpect
from conftest import ENV, REPO, Grove, make_grove, teardown_grove
from sshd import GROVE, Remote, keygen, remote_engine


def remote_shell(remote: Remote, sid: str, *shell_id: str) -> pexpect.spawn:
    """`grove --host URL shell SID [SHELL]` under a 30x100 pty, as a person would run it."""
    env = {**remote.local.env, "TERM": "xterm-256color"}
    return pexpect.spawn(sys.executable, ["-m", "engine.cli.main", "--host", remote.url,
                                          "shell", sid, *shell_id], cwd=str(REPO), env=env,
                         dimensions=(30, 100), timeout=60)  # fmt: skip


def test_cli_verbs_work_through_ssh(remote: Remote) -> None:
    status = json.loads(remote.ok("engine", "status", "--json"))
    assert status["running"] and status["home"] == str(remote.far.home)  # started on demand
    assert status["transport"] == "forward" and status["host"].startswith("ssh://root@")
    assert not (remote.far.home / "client-home" / "engine.sock").exists()
    sid = json.loads(remote.ok("sandbox", "create", ENV, "--json", timeout=900))["id"]
    assert sid in remote.ok("ps")
    out = remote.ok("sandbox", "exec", sid, "--", "sh", "-c", "echo remote-$((6*7))")
    assert out == "remote-42\n"
    code, _, _ = remote.cli("sandbox", "exec", sid, "--", "sh", "-c", "exit 7")
    assert code == 7
    children = json.loads(remote.ok("sandbox", "fork", sid, "--json"))["children"]
    assert len(children) == 1
    tree = json.loads(remote.ok("tree", "--json"))
    ids = json.dumps(tree)
    assert sid in ids and children[0]["id"] in ids
    top = json.loads(remote.ok("top", "--json"))
    assert {s["id"] for s in top["sandboxes"]} >= {sid, children[0]["id"]}
    remote.ok("service", "start", sid, "tick", "--", "sh", "-c", "echo tick-line; sleep 60")
    lines = json.loads(remote.ok("service", "logs", sid, "tick", "--json"))["lines"]
    assert any(line["text"] == "tick-line" for line in lines)
    # The far engine holds them: the same state seen without SSH.
    listed = remote.far.ok("ps", "--json").json()
    assert isinstance(listed, list) and {sid, children[0]["id"]} <= {s["id"] for s in listed}
    remote.ok("sandbox", "terminate", children[0]["id"])


def test_remote_shell_in_raw_mode_detaches_and_reattaches(remote: Remote) -> None:
    sid = json.loads(remote.ok("sandbox", "create", ENV, "--json"))["id"]
    child = remote_shell(remote, sid)
    try:
        child.expect("attached to shell (sh-[0-9a-f]+)")
        shell_id = child.match.group(1).decode()
        child.sendline("stty size; echo marker-$((40+2))")
        child.expect("30 100")
        child.expect("marker-42")
        child.setwinsize(40, 120)
        time.sleep(0.5)
        child.sendline("stty size")
        child.expect("40 120")
        child.send("\x1dd")  # Ctrl+] d
        child.expect("detached")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    shells = json.loads(remote.ok("shell", "ls", sid, "--json"))
    assert [s["state"] for s in shells if s["shell_id"] == shell_id] == ["running"]
    again = remote_shell(remote, sid, shell_id)
    try:
        again.expect("marker-42")  # the scrollback came back
        again.sendline("exit")
        again.expect(pexpect.EOF)
    finally:
        again.close(force=True)
    remote.ok("sandbox", "terminate", sid)


def test_sdk_reconnects_after_a_dropped_connection(remote: Remote) -> None:
    from engine.client import Grove as Client
    from engine.client.hosts import parse_url

    states: list[str] = []
    saved_home = os.environ.get("HOME")
    os.environ["HOME"] = str(remote.sshd.home)  # the client's ~/.ssh
    try:
        with Client.connect(host=parse_url(remote.url),
                            on_state=lambda s, _d: states.append(s)) as client:  # fmt: skip
            assert client.remote
            sid = client.create(ENV).id
            tunnel = client._aio.tunnel
            assert tunnel is not None and tunnel.mode == "forward"
            tunnel.drop()
            deadline = time.monotonic() + 30
            while "connected" not in states and time.monotonic() < deadline:
                time.sleep(0.1)
            assert states[:1] == ["lost"] and "connected" in states, states
            # Calls work again over the new connection, and no engine state was lost.
            result = None
            while result is None and time.monotonic() < deadline:
                try:
                    result = client.exec(sid, ["echo", "back"])
                except Exception:
                    time.sleep(0.2)
            assert result is not None and result.stdout == b"back\n"
            client.terminate(sid)
    finally:
        if saved_home is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = saved_home


def test_dial_stdio_when_the_server_forbids_socket_forwarding() -> None:
    for remote in remote_engine(False, make_grove, teardown_grove):
        status = json.loads(remote.ok("engine", "status", "--json"))
        assert status["transport"] == "dial-stdio"
        sid = json.loads(remote.ok("sandbox", "create", ENV, "--json", timeout=900))["id"]
        assert remote.ok("sandbox", "exec", sid, "--", "echo", "via-stdio") == "via-stdio\n"
        remote.ok("sandbox", "terminate", sid)


def test_each_failure_names_its_stage(remote: Remote) -> None:
    def error(*args: str, env: dict[str, str] | None = None, url: str = "") -> dict[str, str]:
        grove = Grove(remote.local.home, env or remote.local.env)
        result = grove.run("--host", url or remote.url, "ps", "--json", timeout=60)
        assert result.code != 0
        data = result.json()
        assert isinstance(data, dict)
        err = data["error"]
        assert err["remedy"] and "\n" not in err["message"]
        return err  # type: ignore[no-any-return]

    known = remote.sshd.home / ".ssh" / "known_hosts"
    saved = known.read_text()
    try:
        known.unlink()
        assert error()["code"] == "host_key_unknown"
        other = keygen(remote.sshd.root / "other_host_key")
        remote.sshd.trust(other)
        changed = error()
        assert changed["code"] == "host_key_changed" and "ssh-keygen -R" in changed["remedy"]
    finally:
        known.write_text(saved)
    # A key the server does not know.
    stranger = remote.sshd.root / "stranger"
    stranger.mkdir()
    (stranger / ".ssh").mkdir(mode=0o700)
    keygen(stranger / ".ssh" / "id_ed25519")
    (stranger / ".ssh" / "known_hosts").write_text(saved)
    assert error(env={**remote.local.env, "HOME": str(stranger)})["code"] == "ssh_auth_failed"
    # Nothing listening there.
    closed = remote.url.replace(f":{remote.sshd.port}", ":1")
    assert error(url=closed)["code"] == "host_unreachable"
    # Grove is not installed on the far side.
    missing = remote.url.replace(f"?grove={GROVE}", "?grove=/nonexistent/grove")
    assert error(url=missing)["code"] == "grove_not_installed"
    # Not a URL at all, and an unknown alias.
    assert error(url="ssh://")["code"] == "invalid_argument"
    assert error(url="nosuchhost")["code"] == "host_not_found"


def test_named_hosts(remote: Remote) -> None:
    local = remote.local
    assert local.ok("host", "add", "far", remote.url).out
    listed = local.ok("host", "ls", "--json").json()
    assert listed == [{"name": "far", "url": remote.url, "current": False}]
    assert json.loads(local.ok("--host", "far", "engine", "status", "--json").out)["running"]
    local.ok("host", "use", "far")
    # No --host: the chosen one.
    assert json.loads(local.ok("engine", "status", "--json").out)["home"] == str(remote.far.home)
    env_host = Grove(local.home, {**local.env, "GROVE_HOST": "local"})
    assert env_host.run("engine", "status", "--json").code == 3  # GROVE_HOST wins: local
    local.ok("host", "rm", "far")
    assert local.ok("host", "ls", "--json").json() == []
    bad = local.run("host", "add", "x y", remote.url, "--json")
    assert bad.code != 0 and bad.json()["error"]["code"] == "invalid_argument"  # type: ignore[index]


def test_remote_shell_reattaches_after_the_connection_drops(remote: Remote) -> None:
    sid = json.loads(remote.ok("sandbox", "create", ENV, "--json"))["id"]
    child = remote_shell(remote, sid)
    try:
        child.expect("attached to shell")
        child.sendline("echo before-$((1+1))")
        child.expect("before-2")
        remote.sshd.drop_sessions()
        child.expect("connection lost, reattaching", timeout=15)
        child.expect("before-2", timeout=60)  # back, with its scrollback
        child.sendline("echo after-$((2+2))")
        child.expect("after-4")
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    remote.ok("sandbox", "terminate", sid)


def test_remote_watch_goes_on_after_the_connection_drops(remote: Remote) -> None:
    import signal
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli.main", "--host", remote.url, "top", "--watch",
         "--json", "--interval", "1"],
        cwd=REPO, env=remote.local.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        before = json.loads(proc.stdout.readline())
        remote.sshd.drop_sessions()
        after = json.loads(proc.stdout.readline())  # a sample from the new connection
        later = json.loads(proc.stdout.readline())
        assert before["sampled_at"] < after["sampled_at"] < later["sampled_at"]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert b"lost the connection" in err and b"reconnected" in err, err
