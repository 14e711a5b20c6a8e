"""Which tools a profile serves: core (what most agents need) or full (every tool)."""

from __future__ import annotations

from engine.errors import invalid
from engine.mcp import PROFILES, Profile
from engine.mcp.registry import TOOLS, ToolDef

# Imported for their @tool registrations.
from engine.mcp.tools import (
    exec,
    files,
    metering,
    sandboxes,
    services,
    shells,
    snapshots,
    ttl,
)

#: What each profile adds to the ones before it.
INCLUDES: dict[Profile, tuple[Profile, ...]] = {"core": ("core",), "full": ("core", "full")}
#: The order clients list the tools in: core first, then by concept.
ORDER = [m.__name__ for m in (sandboxes, exec, files, snapshots, ttl, services, shells, metering)]


def tools_for(profile: str) -> list[ToolDef]:
    if profile not in PROFILES:
        raise invalid(f"unknown profile '{profile}'", f"use one of {', '.join(PROFILES)}")
    wanted = INCLUDES[profile]  # type: ignore[index]
    chosen = [t for t in TOOLS.values() if t.profile in wanted]
    return sorted(chosen, key=lambda t: (wanted.index(t.profile), ORDER.index(t.fn.__module__)))
