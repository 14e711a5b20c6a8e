"""`grove ui --demo`: a scripted tour on real sandboxes, for presentations.

Pulls and boots debian:12, creates `web`, serves HTTP from it as a service, forks it into a
small family (two children, one grandchild), makes one child write memory so the metering
moves, opens a shell on `web`, and leaves the dashboard live. Every step says what it does on
the activity line; a failure is reported with its remedy and the tour stops there, leaving
what it made so far for the user to look at.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from engine.errors import GroveError
from tui.messages import ActionFailed, Activity
from tui.models import SandboxInfo
from tui.state import join

if TYPE_CHECKING:
    from tui.screens.main import MainScreen

T = TypeVar("T")
ENVIRONMENT = "debian:12"
HTTP_PORT = 8000
#: Grows to 64 MiB in 4 MiB steps, one a second (so the sparkline climbs), then holds it for
#: 15 minutes. Written pages, not just allocated: only those become the child's own memory.
MEMORY_HOG = (
    "import time\n"
    "held = []\n"
    "for step in range(16):\n"
    "    held.append(bytearray(b'\\x01') * (4 << 20))\n"
    "    print(f'holding {4 * (step + 1)} MiB', flush=True)\n"
    "    time.sleep(1)\n"
    "time.sleep(900)\n"
)
#: Typed into the demo shell: a few requests to the service, which then show in its log.
SHELL_COMMAND = (
    'python3 -c "import urllib.request as u; '
    f"[print(p, u.urlopen('http://127.0.0.1:{HTTP_PORT}' + p).status) "
    "for p in ('/', '/etc/', '/usr/', '/tmp/')]\"\r"
)
STEPS = 7


class DemoStopped(Exception):
    """A step failed; it has been reported."""


class Demo:
    def __init__(self, screen: MainScreen, host: str) -> None:
        self.screen = screen
        self.host = host
        self.gateway = screen.controller.gateway(host)
        self.step = 0

    def key(self, sandbox: SandboxInfo) -> str:
        return join(self.host, sandbox.id)

    def say(self, text: str, fraction: float | None = None) -> None:
        self.screen.post_message(Activity(f"Demo {self.step}/{STEPS}: {text}", fraction))

    async def do(self, text: str, call: Callable[[], Awaitable[T]]) -> T:
        """One step: announce it, run it, and stop the tour (reported) if the engine refuses."""
        self.step += 1
        self.say(text + "…")
        try:
            result = await call()
        except GroveError as exc:
            self.screen.post_message(ActionFailed(f"run the demo ({text})", exc))
            raise DemoStopped from None
        return result

    async def run(self) -> None:
        try:
            await self._tour()
        except DemoStopped:
            self.screen.notify(
                "The demo stopped; what it made so far is still here.",
                title="Demo",
                severity="warning",
                timeout=10,
            )
        finally:
            self.screen.post_message(Activity(None))

    async def _pull(self) -> None:
        async for update in self.gateway.pull_environment(ENVIRONMENT, warm=True):
            detail = "cached" if update.cache_hit else update.stage
            self.say(f"pulling and booting {ENVIRONMENT}: {detail}", update.fraction)

    def _names(self, taken: set[str]) -> str:
        """A base name whose family names are all free (the tour can run again)."""
        for n in range(1, 100):
            base = "web" if n == 1 else f"web{n}"
            family = {base, f"{base}-fork-1", f"{base}-fork-2", f"{base}-fork-1-1"}
            if not family & taken:
                return base
        raise DemoStopped

    async def _tour(self) -> None:
        screen = self.screen
        await self.do(f"pulling and booting {ENVIRONMENT} (the first time builds it)", self._pull)
        taken = {s.name for s in await self.gateway.list_sandboxes()}
        base = self._names(taken)

        web: SandboxInfo = await self.do(
            f"creating {base} from {ENVIRONMENT}",
            lambda: self.gateway.create_sandbox(ENVIRONMENT, name=base),
        )
        screen.notify(
            f"{web.label} is {web.phase}: a copy-on-write restore of the template.", title="Demo"
        )

        await self.do(
            f"starting an HTTP service in {base} (waiting until port {HTTP_PORT} answers)",
            lambda: self.gateway.start_service(
                web.id,
                "http",
                ["python3", "-m", "http.server", str(HTTP_PORT)],
                ("tcp", f"127.0.0.1:{HTTP_PORT}"),
            ),
        )
        screen.open_service_log(self.key(web), web.label, "http")

        children = await self.do(
            f"forking {base} into two children (memory and disk shared copy-on-write)",
            lambda: self.gateway.fork(web.id, 2, name_prefix=f"{base}-fork"),
        )
        grandchildren = await self.do(
            f"forking {children[0].label} once more: a grandchild",
            lambda: self.gateway.fork(children[0].id, 1, name_prefix=children[0].label),
        )
        screen.notify(
            f"{base} → {', '.join(c.label for c in children)} → "
            f"{grandchildren[0].label}: each fork runs on from its parent's state, "
            "HTTP service included.",
            title="Demo",
        )

        writer = children[1]
        await self.do(
            f"making {writer.label} write 64 MiB of memory (watch its unique memory climb)",
            lambda: self.gateway.start_service(writer.id, "memhog", ["python3", "-c", MEMORY_HOG]),
        )
        screen.select(self.host, writer.id)

        self.step += 1
        self.say(f"opening a shell in {base}…")
        view = await screen.open_shell_tab(self.key(web), web.label)
        if view is None:
            raise DemoStopped  # open_shell_tab reported why
        for _ in range(100):  # type once the prompt is there, so the echo reads cleanly
            if any(line.rstrip().endswith(("#", "$")) for line in view.terminal.screen_lines()):
                break
            await asyncio.sleep(0.1)
        view.terminal.send(SHELL_COMMAND.encode())
        screen.notify(
            f"Live now. {writer.label}'s unique memory grows while its siblings stay small; "
            "the host bar sets CoW-aware totals against naive ones. ctrl+] leaves the shell, "
            "? shows the keys.",
            title="Demo ready",
            timeout=15,
        )
