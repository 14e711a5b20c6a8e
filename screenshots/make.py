"""Screenshots of the dashboard in every theme, taken from the real thing.

    GROVE_HOME=... .venv/bin/python screenshots/make.py            # real engine (default)
    .venv/bin/python screenshots/make.py --fake                    # FakeEngine's data

Against the real engine it runs the dashboard's own `--demo` tour (debian:12, a sandbox
serving HTTP, a family of forks, one of them writing memory, a shell tab), lets the metering
run for a while, then saves, into this directory:

    main-THEME.svg   the dashboard with its shell tab, one per bundled theme
    logs-THEME.svg   the service's log tab, one per bundled theme
    fleet-THEME.svg  (--fleet) a fleet: this engine running the tour, a second real engine
                     reached through a real OpenSSH server on 127.0.0.1 with a small family of
                     forks, and a host that refuses connections

and a PNG of each when a converter is available (rsvg-convert from librsvg2-bin, or
cairosvg); otherwise PNGs are skipped. The sandboxes the tour made are terminated afterwards
unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.errors import GroveError  # noqa: E402
from tui.app import GroveApp  # noqa: E402
from tui.engine.gateway import EngineGateway  # noqa: E402
from tui.screens.main import MainScreen  # noqa: E402
from tui.state import join  # noqa: E402
from tui.widgets.service_logs import ServiceLogPane  # noqa: E402

OUT = Path(__file__).resolve().parent
SIZE = (140, 40)


async def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshots: timed out waiting for {what}")
        await asyncio.sleep(0.1)


def _save(app: GroveApp, name: str) -> Path:
    path = Path(app.save_screenshot(filename=f"{name}.svg", path=str(OUT)))
    print(f"  saved {path.relative_to(REPO)}", flush=True)
    return path


async def shoot(
    app: GroveApp, themes: list[str], settle: float, fake: bool, fleet: bool = False
) -> list[Path]:
    saved: list[Path] = []
    suffix = "-fake" if fake else ""
    async with app.run_test(size=SIZE) as pilot:
        await _wait(lambda: isinstance(app.screen, MainScreen), 10, "the dashboard")
        screen = app.screen
        assert isinstance(screen, MainScreen)
        local = app.state.hosts["local"]
        if fake:
            await _wait(lambda: bool(local.sandboxes), 10, "sandboxes")
            web = next(iter(local.sandboxes))
            screen.select("local", web)
            screen.open_service_log(join("local", web), "web", "http")
            await screen.open_shell_tab(join("local", web), "web")
        else:

            def outcome() -> str | None:
                for note in app._notifications:
                    if note.title == "Demo ready":
                        return ""
                    if note.severity == "error" and "demo" in (note.title or ""):
                        return note.message
                return None

            await _wait(lambda: outcome() is not None, 900, "the demo tour")
            if failure := outcome():
                raise SystemExit(f"screenshots: the demo failed: {failure}")
            print(f"  demo ready; {settle:g} s of live metering", flush=True)
        await pilot.pause(settle)
        app.clear_notifications()
        screen.metering_table.focus()  # the footer then shows the dashboard's keys
        bottom = screen.query_one("#bottom")
        logs = screen.query_one(ServiceLogPane)
        tab_of_log = logs.parent.id if logs.parent is not None else None
        for theme in themes:
            app.theme = theme
            bottom.active = "shells"  # type: ignore[attr-defined]
            await pilot.pause(0.5)
            saved.append(_save(app, f"{'fleet' if fleet else 'main'}-{theme}{suffix}"))
            if fleet:
                continue
            if tab_of_log:
                bottom.active = tab_of_log  # type: ignore[attr-defined]
                await pilot.pause(0.5)
                saved.append(_save(app, f"logs-{theme}{suffix}"))
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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fake", action="store_true", help="FakeEngine instead of the engine")
    parser.add_argument("--keep", action="store_true", help="keep the sandboxes the tour made")
    parser.add_argument("--no-png", action="store_true")
    parser.add_argument(
        "--fleet",
        action="store_true",
        help="the fleet shots: a second real engine over SSH and a host that is down",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=20.0,
        help="seconds of live metering after the tour, before the first shot",
    )
    args = parser.parse_args(argv)

    gateway: EngineGateway
    before: set[str] = set()
    if args.fake:
        from tui.engine.fake import FAKE_NOW, FakeEngine

        gateway = FakeEngine()

        def now() -> float:
            return FAKE_NOW

    else:
        from tui.engine.grpc_gateway import GrpcGateway

        gateway = GrpcGateway()
        now = time.time
        try:
            await gateway.connect()
            before = {s.id for s in await gateway.list_sandboxes()}
        except GroveError as exc:
            print(f"screenshots: {exc.message}\n  remedy: {exc.remedy}", file=sys.stderr)
            return 1
    gateways: dict[str, EngineGateway] = {"local": gateway}
    saved: list[Path] = []
    try:
        with contextlib.ExitStack() as stack:
            if args.fleet and not args.fake:
                from screenshots.fleet import second_host

                gateways.update(stack.enter_context(second_host()))
            app = GroveApp(gateways, now=now, user_themes=False, demo=not args.fake)
            app.animation_level = "none"
            try:
                settle = 0.5 if args.fake else args.settle
                saved = await shoot(app, app.grove_theme_names, settle, args.fake, args.fleet)
            finally:
                for extra in list(gateways.values())[1:]:
                    await extra.close()
    finally:
        if not args.fake and not args.keep:
            from tui.engine.grpc_gateway import GrpcGateway

            cleanup = GrpcGateway(autostart=False)
            for sandbox in await cleanup.list_sandboxes():
                if sandbox.id not in before:
                    try:
                        await cleanup.terminate_sandbox(sandbox.id)
                        print(f"  terminated {sandbox.label}", flush=True)
                    except GroveError as exc:
                        print(
                            f"  could not terminate {sandbox.label}: {exc.message}", file=sys.stderr
                        )
            await cleanup.close()
    if not args.no_png:
        for svg in saved:
            png = to_png(svg)
            if png is None:
                print("  no SVG converter: PNGs skipped")
                break
            print(f"  saved {png.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
