"""grove demo: a short guided tour on real sandboxes (the dashboard's --demo grows from this)."""

from __future__ import annotations

import time

from engine.cli.context import Context
from engine.cli.output import Progress


def _say(text: str) -> None:
    print(f"\n\x1b[1m==> {text}\x1b[0m", flush=True)


def _exec(ctx: Context, sandbox: str, argv: list[str]) -> None:
    for chunk in ctx.client.exec_stream(sandbox, argv).output():
        print(chunk.data.decode(errors="replace"), end="", flush=True)


def demo(ctx: Context) -> int:
    client = ctx.client
    _say("Pulling debian:12 (built locally from Debian packages; cached after the first time)")
    progress = Progress()
    for update in client.pull("debian:12", warm=True):
        if not update.done:
            progress.update(update.stage, update.fraction)
    progress.finish("debian:12 ready")
    status = client.status()
    _say(f"Engine pid {status.pid} on {status.accelerator} ({status.accelerator_reason})")
    _say("Creating a sandbox by restoring the environment's booted template")
    started = time.monotonic()
    sandbox = client.create("debian:12")
    print(f"{sandbox.id} running, created in {(time.monotonic() - started) * 1000:.0f} ms")
    try:
        _say("Running commands inside it")
        _exec(ctx, sandbox.id, ["uname", "-a"])
        _exec(ctx, sandbox.id, ["sh", "-c", "cat /etc/os-release | head -2; hostname; nproc; "
                                "free -m | head -2"])  # fmt: skip
        _say(f"Agent round trip: {client.ping(sandbox.id):.2f} ms")
    finally:
        client.terminate(sandbox.id)
        _say(f"Terminated {sandbox.id}. Try: grove run debian:12 -- python3 -c 'print(6*7)'")
    return 0
