"""grove doctor and grove env on this host."""

from __future__ import annotations

import os

from conftest import ENV, Grove


def test_doctor_json_reports_accelerator_and_checks(grove: Grove) -> None:
    result = grove.run("doctor", "--json")
    data = result.json()
    assert isinstance(data, dict)
    assert set(data) >= {"ok", "accelerator", "checks"}
    assert data["ok"] is True and result.code == 0
    names = {c["name"] for c in data["checks"]}
    assert {"qemu", "accelerator", "kvm", "images", "state dir", "disk", "memory", "tsc"} <= names
    if os.geteuid() == 0:  # what the namespace backend needs, each checked for real
        checked = {c["name"]: c["status"] for c in data["checks"]}
        assert {checked["tun"], checked["nftables"], checked["netns"]} == {"ok"}
        assert "egress uplink" in checked
    for check in data["checks"]:
        assert set(check) >= {"name", "status", "detail", "remedy"}
        assert check["status"] in ("ok", "warn", "fail")
    from engine.vmm.accel import probe

    assert data["accelerator"] == probe().name
    human = grove.ok("doctor").out
    assert "accelerator" in human and "host can run sandboxes" in human


def test_env_list_inspect_pull_cache_hit(grove: Grove) -> None:
    envs = grove.ok("env", "list", "--json").json()
    assert isinstance(envs, list)
    deb = next(e for e in envs if e["name"] == ENV)
    assert deb["cached"] is True and deb["size_bytes"] > 10_000_000
    pulled = grove.ok("env", "pull", ENV, "--json").json()
    assert isinstance(pulled, dict) and pulled["cache_hit"] is True
    inspected = grove.ok("env", "inspect", ENV, "--json").json()
    assert isinstance(inspected, dict) and inspected["template_ready"] is True
    assert inspected["recipe_hash"] == deb["recipe_hash"]


def test_engine_status_contract(grove: Grove) -> None:
    status = grove.ok("engine", "status", "--json").json()
    assert isinstance(status, dict)
    assert status["running"] is True and status["pid"] == grove.engine_pid()
    assert status["accelerator"] in ("kvm", "tcg")


def test_env_prune_keeps_what_is_in_use(grove: Grove, sandbox: str) -> None:
    # A stale layer nobody references is removed; what the sandbox sits on is not.
    stale = grove.home / "images" / "rootfs" / ("0" * 64)
    stale.mkdir(parents=True)
    (stale / "rootfs.qcow2").write_bytes(b"\0" * 4096)
    pruned = grove.ok("env", "prune", "--json").json()
    assert isinstance(pruned, dict) and pruned["bytes_freed"] >= 4096
    assert not stale.exists()
    grove.ok("sandbox", "exec", sandbox, "--", "true")  # ok() fails the test unless it exits 0
    envs = grove.ok("env", "list", "--json").json()
    assert isinstance(envs, list)
    assert next(e for e in envs if e["name"] == ENV)["cached"] is True
