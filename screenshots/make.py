"""Screenshots of the dashboard in every theme, taken from the real thing.

    GROVE_HOME=... .venv/bin/python screenshots/make.py            # real engine (default)
    .venv/bin/python screenshots/make.py --fake                    # FakeEngine's demo data

Against the real engine it makes sure a few sandboxes exist (creating them from debian:12 if
needed, and terminating those it created when done, unless --keep), waits for the dashboard to
show them, then saves one SVG per theme into this directory. PNGs are written too when a
converter is available (cairosvg, or rsvg-convert); otherwise they are skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.errors import GroveError  # noqa: E402
from tui.app import GroveApp  # noqa: E402
from tui.engine.gateway import EngineGateway  # noqa: E402
from tui.screens.main import MainScreen  # noqa: E402

OUT = Path(__file__).resolve().parent
SIZE = (140, 40)


async def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshots: timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def ensure_sandboxes(gateway: EngineGateway, want: int, environment: str) -> list[str]:
    """Create sandboxes until `want` are running; return the ids this run created."""
    await gateway.connect()
    running = [s for s in await gateway.list_sandboxes() if s.phase == "running"]
    created = []
    if len(running) < want:
        async for update in gateway.pull_environment(environment, warm=True):
            print(f"  pull {environment}: {update.stage}", flush=True)
    for i in range(want - len(running)):
        sandbox = await gateway.create_sandbox(environment, name=f"shot-{i + 1}")
        print(f"  created {sandbox.id} ({sandbox.label})", flush=True)
        created.append(sandbox.id)
    return created


async def shoot(
    app: GroveApp, themes: list[str], names: dict[str, str], settle: float
) -> list[Path]:
    saved = []
    async with app.run_test(size=SIZE) as pilot:
        await _wait(lambda: isinstance(app.screen, MainScreen), 10, "the dashboard")
        screen = app.screen
        assert isinstance(screen, MainScreen)
        await _wait(lambda: bool(screen.sandboxes), 60, "sandboxes to show")
        await _wait(lambda: bool(screen._event_log), 30, "lifecycle events")
        await pilot.pause(settle)  # refreshes, and metering samples for the sparklines
        first = next(iter(screen.sandboxes))
        screen.metering_table.select_sandbox(first)
        for theme in themes:
            app.theme = theme
            await pilot.pause(0.3)
            path = app.save_screenshot(filename=names.get(theme, f"main-{theme}.svg"),
                                       path=str(OUT))
            saved.append(Path(path))
            print(f"  saved {path}", flush=True)
    return saved


def to_png(svg: Path) -> Path | None:
    png = svg.with_suffix(".png")
    try:
        import cairosvg  # type: ignore[import-not-found]

        cairosvg.svg2png(url=str(svg), write_to=str(png), output_width=1400)
        return png
    except ImportError:
        pass
    rsvg = shutil.which("rsvg-convert")
    if rsvg is None:
        return None
    # rsvg drops leading spaces inside <text> unless told to preserve them.
    with tempfile.NamedTemporaryFile("w", suffix=".svg", delete=False) as tmp:
        tmp.write(svg.read_text().replace("<svg ", '<svg xml:space="preserve" ', 1))
    try:
        subprocess.run([rsvg, "-w", "1400", tmp.name, "-o", str(png)], check=True)
    finally:
        Path(tmp.name).unlink(missing_ok=True)
    return png


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fake", action="store_true", help="FakeEngine instead of the engine")
    parser.add_argument("--sandboxes", type=int, default=3, help="running sandboxes wanted")
    parser.add_argument("--environment", default="debian:12")
    parser.add_argument("--keep", action="store_true", help="keep the sandboxes created here")
    parser.add_argument("--no-png", action="store_true")
    parser.add_argument("--settle", type=float, default=6.0,
                        help="seconds of live data before the first shot")
    args = parser.parse_args(argv)

    gateway: EngineGateway
    created: list[str] = []
    if args.fake:
        from tui.engine.fake import FAKE_NOW, FakeEngine

        gateway = FakeEngine()

        def now() -> float:
            return FAKE_NOW

    else:
        from tui.engine.grpc_gateway import GrpcGateway

        gateway = GrpcGateway()
        now = time.time  # type: ignore[assignment]
        try:
            created = await ensure_sandboxes(gateway, args.sandboxes, args.environment)
        except GroveError as exc:
            print(f"screenshots: {exc.message}\n  remedy: {exc.remedy}", file=sys.stderr)
            return 1
    app = GroveApp(gateway, now=now, user_themes=False, refresh_interval=0.5)
    app.animation_level = "none"
    themes = app.grove_theme_names
    suffix = "-fake" if args.fake else ""
    names = {theme: f"main-{theme}{suffix}.svg" for theme in themes}
    try:
        saved = await shoot(app, themes, names, 0.5 if args.fake else args.settle)
    finally:
        if created and not args.keep:
            from tui.engine.grpc_gateway import GrpcGateway

            cleanup = GrpcGateway(autostart=False)
            for sandbox_id in created:
                try:
                    await cleanup.terminate_sandbox(sandbox_id)
                except GroveError as exc:
                    print(f"  could not terminate {sandbox_id}: {exc.message}", file=sys.stderr)
            await cleanup.close()
    if not args.no_png:
        for svg in saved:
            png = to_png(svg)
            print(f"  {'saved ' + str(png) if png else 'no SVG converter: PNG skipped'}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
