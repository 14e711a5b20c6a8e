"""Which Debian mirror to bootstrap from: the host's own apt sources, unless overridden."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from guest.image.errors import ImageBuildError

MIRROR_ENV = "GROVE_DEBIAN_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
APT_DIR = Path("/etc/apt")


def _one_line_entries(text: str) -> list[tuple[str, str]]:
    """(uri, suite) from ``deb [options] URI SUITE COMPONENTS...`` lines."""
    found: list[tuple[str, str]] = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):
            while words and not words[0].endswith("]"):
                words.pop(0)
            words = words[1:]
        if len(words) >= 2:
            found.append((words[0], words[1]))
    return found


def _deb822_entries(text: str) -> list[tuple[str, str]]:
    """(uri, suite) from deb822 stanzas (``Types: deb``, ``URIs:``, ``Suites:``)."""
    found: list[tuple[str, str]] = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        found += [
            (u, s) for u in fields.get("uris", "").split() for s in fields.get("suites", "").split()
        ]
    return found


def apt_sources(apt_dir: Path = APT_DIR) -> list[tuple[str, str]]:
    """Every (uri, suite) the host's apt is configured with, in apt's reading order."""
    entries: list[tuple[str, str]] = []
    main = apt_dir / "sources.list"
    if main.is_file():
        entries += _one_line_entries(main.read_text(errors="replace"))
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list":
                entries += _one_line_entries(path.read_text(errors="replace"))
            elif path.suffix == ".sources":
                entries += _deb822_entries(path.read_text(errors="replace"))
    return entries


def find_mirror(suite: str, apt_dir: Path = APT_DIR) -> str:
    """``$GROVE_DEBIAN_MIRROR``, else the first host source for ``suite``, else deb.debian.org."""
    override = os.environ.get(MIRROR_ENV, "").strip()
    if override:
        return override.rstrip("/")
    for uri, entry_suite in apt_sources(apt_dir):
        if entry_suite == suite and uri.split(":", 1)[0] in ("http", "https", "file", "ftp"):
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def check_reachable(mirror: str, suite: str, timeout: float = 15) -> None:
    """Fail fast, with a remedy, when the mirror does not serve ``suite``."""
    if not mirror.startswith(("http://", "https://")):
        return
    url = f"{mirror}/dists/{suite}/Release"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return
    except urllib.error.HTTPError as exc:
        cause = f"mirror {mirror} has no suite '{suite}' (HTTP {exc.code})"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        cause = f"cannot reach Debian mirror {mirror}: {reason}"
    raise ImageBuildError(
        cause, f"check the network, or set {MIRROR_ENV} to a reachable Debian mirror"
    )
