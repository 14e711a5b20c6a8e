"""python -m bench [--rounds N] [--only NAME]: prints JSON on stdout and a table on stderr."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from bench import (
    density,
    files,
    fleet,
    fork,
    foundation,
    idle,
    mcp,
    metering,
    network,
    remote,
    shells,
    tui,
)
from bench.harness import print_table, private_engine
from engine.vmm.accel import probe


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--only",
        choices=[
            "foundation",
            "fork",
            "idle",
            "metering",
            "shells",
            "remote",
            "tui",
            "fleet",
            "density",
            "network",
            "files",
            "mcp",
        ],
        default=None,
    )
    parser.add_argument(
        "--image-cache",
        type=Path,
        default=Path(os.environ.get("GROVE_TEST_IMAGE_CACHE", "/var/tmp/grove-test-images")),
    )
    args = parser.parse_args()
    from guest.image.builder import build_environment

    build_environment(foundation.ENV, args.image_cache)
    report: dict[str, object] = {
        "accelerator": probe().name,
        "started_at": time.time(),
        "rounds": args.rounds,
    }
    results: list[dict[str, object]] = []
    with private_engine(args.image_cache) as client:
        if args.only in (None, "foundation"):
            results += foundation.run(client, args.rounds)
        if args.only in (None, "fork"):
            results += fork.run(client, args.rounds)
        if args.only in (None, "shells"):
            results += shells.run(client, args.rounds)
        if args.only in (None, "remote"):
            results += remote.run(client, args.rounds)
        metered = idle.ratios(results) if args.only is None else []
        if args.only in (None, "idle"):
            metered += idle.run(client, args.rounds)
        if args.only in (None, "metering"):
            metered += metering.run(client, args.rounds)
        if args.only in (None, "density"):
            metered += density.run(client, args.rounds, args.image_cache)
        dashboard = tui.run(client, args.rounds) if args.only in (None, "tui") else []
        fleet_results = fleet.run(client, args.rounds) if args.only in (None, "fleet") else []
        file_results = files.run(client, args.rounds) if args.only in (None, "files") else []
        if args.only in (None, "mcp"):
            results += mcp.run(client, args.rounds)
    # Its own two engines (namespaces and user-mode, pools off), after the shared one stopped.
    net_results = (
        network.run(args.image_cache, args.rounds) if args.only in (None, "network") else []
    )
    results += metered + dashboard + fleet_results + net_results + file_results
    report["results"] = results
    print(json.dumps(report, indent=2))
    special = metered + dashboard + fleet_results + net_results + file_results
    timed = [r for r in results if r not in special]
    if timed:
        print_table(timed)  # type: ignore[arg-type]
    if metered:
        metering.print_summary(metered)
    if dashboard:
        tui.print_summary(dashboard)
    if fleet_results:
        fleet.print_summary(fleet_results)
    if net_results:
        network.print_summary(net_results)
    if file_results:
        files.print_summary(file_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
