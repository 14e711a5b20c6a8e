"""What a service is: its command, readiness probe, restart policy and published ports.

Validated once here, so every path (API, restart after an engine restart, fork inheritance)
works from the same checked definition. Secrets are named (secret_env), never stored here:
their values are read from the vault at each start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from engine.errors import invalid

PROBE_KINDS = ("file", "tcp", "http", "command")
RESTART_POLICIES = ("no", "on-failure")
DEFAULT_READY_TIMEOUT_S = 30.0
MAX_READY_TIMEOUT_S = 3600.0
DEFAULT_INTERVAL_MS = 100
MIN_INTERVAL_MS = 10
MAX_INTERVAL_MS = 60_000
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")


def validate_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise invalid(
            f"invalid service name '{name[:64]}'",
            "use 1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


@dataclass(frozen=True)
class Probe:
    kind: str
    target: str

    def validate(self) -> Probe:
        kind, target = self.kind, self.target
        if kind not in PROBE_KINDS:
            raise invalid(f"unknown probe kind '{kind}'", f"use one of {', '.join(PROBE_KINDS)}")
        if not target or "\0" in target:
            raise invalid(f"empty --ready-{kind} target", f"pass --ready-{kind} with a value")
        if kind == "file" and not target.startswith("/"):
            raise invalid(
                f"--ready-file '{target}' is not an absolute path", "pass a path like /tmp/ready"
            )
        if kind == "tcp":
            match = _HOST_PORT.match(target)
            if match is None or not 0 < int(match.group(2)) < 65536:
                raise invalid(
                    f"--ready-tcp '{target}' is not HOST:PORT", "e.g. --ready-tcp 127.0.0.1:8080"
                )
        if kind == "http" and not re.match(r"^http://[^/\s]+", target):
            raise invalid(
                f"--ready-http '{target}' is not an http:// URL",
                "e.g. --ready-http http://127.0.0.1:8080/health (https is not probed)",
            )
        return self

    def describe(self) -> str:
        return f"{self.kind} {self.target}"


@dataclass(frozen=True)
class PortRequest:
    guest_port: int
    host_port: int = 0  # 0: pick a free one

    def validate(self) -> PortRequest:
        if not 0 < self.guest_port < 65536 or not 0 <= self.host_port < 65536:
            raise invalid(
                f"invalid --publish {self.host_port or ''}:{self.guest_port}",
                "use [HOST_PORT:]GUEST_PORT with ports 1-65535",
            )
        return self


def parse_publish(text: str) -> PortRequest:
    host, sep, guest = text.rpartition(":")
    if not guest.isdigit() or (sep and not host.isdigit()):
        raise invalid(f"invalid --publish '{text}'", "use [HOST_PORT:]GUEST_PORT, e.g. 8080:80")
    return PortRequest(int(guest), int(host) if sep else 0).validate()


@dataclass
class ServiceSpec:
    name: str
    argv: list[str]
    cwd: str = ""
    env: dict[str, str] = field(default_factory=dict)
    probe: Probe | None = None
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S
    interval_ms: int = DEFAULT_INTERVAL_MS
    restart: str = "no"
    publish: list[PortRequest] = field(default_factory=list)
    #: Secrets it gets as variables, NAME or NAME=VARIABLE (names only: values stay in the vault).
    secret_env: list[str] = field(default_factory=list)

    def validate(self) -> ServiceSpec:
        validate_name(self.name)
        if not self.argv or not self.argv[0]:
            raise invalid("no command given", "put the command after '--', e.g. -- python3 app.py")
        for key in self.env:
            if not key or "=" in key or "\0" in key or not (key[0].isalpha() or key[0] == "_"):
                raise invalid(f"invalid variable name '{key[:64]}'", "use --env NAME=VALUE")
        if self.probe is not None:
            self.probe.validate()
        if not 0 < self.ready_timeout_s <= MAX_READY_TIMEOUT_S:
            raise invalid(
                f"invalid --ready-timeout-seconds {self.ready_timeout_s:g}",
                f"pass a number of seconds between 0 and {MAX_READY_TIMEOUT_S:g}",
            )
        if not MIN_INTERVAL_MS <= self.interval_ms <= MAX_INTERVAL_MS:
            raise invalid(
                f"invalid --ready-interval-ms {self.interval_ms}",
                f"pass {MIN_INTERVAL_MS}-{MAX_INTERVAL_MS} milliseconds",
            )
        if self.restart not in RESTART_POLICIES:
            raise invalid(f"invalid --restart '{self.restart}'", "use --restart no or on-failure")
        guests = [p.validate().guest_port for p in self.publish]
        hosts = [p.host_port for p in self.publish if p.host_port]
        if len(set(guests)) != len(guests) or len(set(hosts)) != len(hosts):
            raise invalid("a port is published twice", "give each --publish its own ports")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "argv": list(self.argv),
            "cwd": self.cwd,
            "env": dict(self.env),
            "probe": {"kind": self.probe.kind, "target": self.probe.target} if self.probe else None,
            "ready_timeout_s": self.ready_timeout_s,
            "interval_ms": self.interval_ms,
            "restart": self.restart,
            "publish": [
                {"guest_port": p.guest_port, "host_port": p.host_port} for p in self.publish
            ],
            "secret_env": list(self.secret_env),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServiceSpec:
        probe = data.get("probe")
        return cls(
            name=str(data["name"]),
            argv=[str(a) for a in data["argv"]],
            cwd=str(data.get("cwd", "")),
            env={str(k): str(v) for k, v in (data.get("env") or {}).items()},
            probe=Probe(str(probe["kind"]), str(probe["target"])) if probe else None,
            ready_timeout_s=float(data.get("ready_timeout_s", DEFAULT_READY_TIMEOUT_S)),
            interval_ms=int(data.get("interval_ms", DEFAULT_INTERVAL_MS)),
            restart=str(data.get("restart", "no")),
            publish=[
                PortRequest(int(p["guest_port"]), int(p.get("host_port", 0)))
                for p in data.get("publish") or []
            ],
            secret_env=[str(s) for s in data.get("secret_env") or []],
        )
