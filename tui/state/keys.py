"""Fleet-wide keys: a sandbox id is unique on its engine only, so the dashboard names
everything by host and id (two engines may both have `env:debian:12`, or the same id)."""

from __future__ import annotations

SEP = "\t"  # in no host name and no engine id
SandboxKey = str


def join(host: str, node_id: str) -> SandboxKey:
    return f"{host}{SEP}{node_id}"


def split(key: SandboxKey) -> tuple[str, str]:
    host, _, node_id = key.partition(SEP)
    return host, node_id


def host_of(key: SandboxKey) -> str:
    return split(key)[0]


def host_key(host: str) -> SandboxKey:
    """The tree node of a host itself."""
    return join(host, "")
