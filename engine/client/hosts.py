"""Where an engine is: this host, or `ssh://user@host[:port][/path/to/engine.sock]`.

Which engine a command talks to: `--host`, else `GROVE_HOST`, else the alias chosen with
`grove host use NAME`, else the local one. Aliases live in the user's config directory
(`$XDG_CONFIG_HOME/grove/hosts.json`, by default `~/.config/grove/hosts.json`).

A URL may end in `?grove=/path/to/grove` when `grove` is not on the remote PATH.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from engine.errors import GroveError

_ALIAS = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


@dataclass(frozen=True)
class SshTarget:
    """A remote engine reached over SSH."""

    url: str
    host: str
    port: int | None = None
    user: str | None = None
    #: The remote engine's socket; None: the remote `grove`'s default home.
    socket: str | None = None
    #: The remote command that runs grove.
    grove: str = "grove"

    @property
    def label(self) -> str:
        who = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"ssh://{who}{self.host}{port}"

    @property
    def remote_home(self) -> str | None:
        """The GROVE_HOME holding the given socket (engine.sock sits in its home)."""
        if self.socket is None:
            return None
        path = Path(self.socket)
        return str(path.parent) if path.name == "engine.sock" else None


def bad_url(text: str, why: str) -> GroveError:
    return GroveError(
        "invalid_argument",
        f"invalid host '{text}': {why}",
        "use ssh://USER@HOST[:PORT][/path/to/engine.sock], or a name from 'grove host ls'",
    )


def parse_url(text: str) -> SshTarget:
    parts = urlsplit(text)
    if parts.scheme != "ssh":
        raise bad_url(text, "only ssh:// hosts are supported")
    if not parts.hostname:
        raise bad_url(text, "no host name")
    try:
        port = parts.port
    except ValueError:
        raise bad_url(text, "the port is not a number from 1 to 65535") from None
    path = unquote(parts.path) or None
    if path is not None and (not path.startswith("/") or path == "/"):
        raise bad_url(text, "the socket path must be absolute")
    query = parse_qs(parts.query)
    unknown = set(query) - {"grove"}
    if unknown:
        raise bad_url(text, f"unknown option {sorted(unknown)[0]}")
    grove = query.get("grove", ["grove"])[-1]
    if not grove.strip():
        raise bad_url(text, "grove= needs a command")
    return SshTarget(
        url=text,
        host=parts.hostname,
        port=port,
        user=unquote(parts.username) if parts.username else None,
        socket=path,
        grove=grove,
    )


def config_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "grove" / "hosts.json"


@dataclass
class HostBook:
    """The user's named hosts and which one is in use."""

    hosts: dict[str, str]
    current: str | None = None

    @classmethod
    def load(cls, path: Path | None = None) -> HostBook:
        path = path or config_file()
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls({})
        except (OSError, ValueError) as exc:
            raise GroveError(
                "config_unreadable",
                f"cannot read {path}: {exc}",
                f"fix or remove {path}",
            ) from None
        hosts = data.get("hosts") if isinstance(data, dict) else None
        if not isinstance(hosts, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in hosts.items()
        ):
            raise GroveError(
                "config_unreadable", f"{path} is not a Grove hosts file", f"remove {path}"
            )
        current = data.get("current")
        return cls(dict(hosts), current if isinstance(current, str) else None)

    def save(self, path: Path | None = None) -> None:
        path = path or config_file()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"hosts": self.hosts, "current": self.current}, indent=2))
        tmp.replace(path)

    def add(self, name: str, url: str) -> None:
        if not _ALIAS.match(name) or name.startswith("ssh"):
            raise GroveError(
                "invalid_argument",
                f"invalid host name '{name}'",
                "use lowercase letters, digits, . _ - (not starting with 'ssh'), e.g. build-1",
            )
        parse_url(url)
        self.hosts[name] = url

    def remove(self, name: str) -> None:
        if name not in self.hosts:
            raise unknown_alias(name, self)
        del self.hosts[name]
        if self.current == name:
            self.current = None

    def use(self, name: str | None) -> None:
        if name is not None and name not in self.hosts:
            raise unknown_alias(name, self)
        self.current = name


def unknown_alias(name: str, book: HostBook) -> GroveError:
    known = ", ".join(sorted(book.hosts)) or "none yet"
    return GroveError(
        "host_not_found",
        f"no host named '{name}' (known: {known})",
        "add it with 'grove host add NAME ssh://USER@HOST', or pass an ssh:// URL",
    )


def resolve(given: str | None, book: HostBook | None = None) -> SshTarget | None:
    """The engine to talk to: None for this host's own."""
    text = given if given is not None else os.environ.get("GROVE_HOST", "")
    if given is None and not text:
        book = book or HostBook.load()
        if book.current is None:
            return None
        text = book.current
    text = text.strip()
    if text in ("", "local"):
        return None
    if "://" in text:
        return parse_url(text)
    book = book or HostBook.load()
    if text not in book.hosts:
        raise unknown_alias(text, book)
    return parse_url(book.hosts[text])
