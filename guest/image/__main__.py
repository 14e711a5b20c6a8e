"""Manual entry point: ``python -m guest.image build debian:12 --home DIR``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from guest.image.builder import (
    build_environment,
    inspect_environment,
    list_environments,
    prune,
)
from guest.image.errors import ImageBuildError
from guest.image.recipes import known_environments


def _default_home() -> Path:
    return Path(os.environ.get("GROVE_HOME", Path.home() / ".grove"))


def _progress_printer() -> Callable[[str, float | None], None]:
    started = time.monotonic()

    def show(stage: str, fraction: float | None) -> None:
        pct = "    " if fraction is None else f"{fraction * 100:3.0f}%"
        print(f"[{time.monotonic() - started:6.1f}s] {pct} {stage}", flush=True)

    return show


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m guest.image", description=__doc__)
    parser.add_argument(
        "--home", type=Path, default=None, help="GROVE home (default $GROVE_HOME or ~/.grove)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build (or find cached) an environment image")
    build.add_argument("name", help="environment, e.g. debian:12")
    build.add_argument("--home", type=Path, default=None, dest="sub_home")
    build.add_argument("--force", action="store_true", help="rebuild every layer")
    for cmd in ("list", "prune", "known"):
        p = sub.add_parser(cmd)
        p.add_argument("--home", type=Path, default=None, dest="sub_home")
    inspect = sub.add_parser("inspect", help="show a built environment")
    inspect.add_argument("name")
    inspect.add_argument("--home", type=Path, default=None, dest="sub_home")
    args = parser.parse_args(argv)
    home: Path = (args.sub_home or args.home or _default_home()).resolve()

    try:
        if args.command == "build":
            show = _progress_printer()
            image = build_environment(args.name, home, progress=show, force=args.force)
            _print_image(asdict(image))
        elif args.command == "inspect":
            _print_image(asdict(inspect_environment(home, args.name)))
        elif args.command == "list":
            for image in list_environments(home):
                size = image.rootfs_bytes >> 20
                print(f"{image.name:16} {image.recipe_hash[:12]}  rootfs {size} MiB")
        elif args.command == "prune":
            print(f"freed {prune(home) / (1 << 20):.1f} MiB")
        else:
            print("\n".join(known_environments()))
    except ImageBuildError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.remedy:
            print(f"  fix: {exc.remedy}", file=sys.stderr)
        return 1
    return 0


def _print_image(fields: dict[str, object]) -> None:
    for key, value in fields.items():
        print(f"{key:16} {value}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # output piped into head(1) and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
