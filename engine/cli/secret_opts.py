"""The CLI's secret options: given at create (--secret, --secret-file), asked for per call
(--secret-env). Checked here first, so bad input fails before the engine makes anything; no
message ever shows a value."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from engine.errors import invalid
from engine.secrets import spec


def add_create_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--secret",
        action="append",
        metavar="NAME[=VALUE]",
        help="a secret for the sandbox (NAME alone reads it from your environment); "
        "commands get it only with --secret-env",
    )
    p.add_argument(
        "--secret-file",
        action="append",
        metavar="NAME=PATH",
        help="a secret read from a file on this machine",
    )


def add_call_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--secret-env",
        action="append",
        metavar="NAME[=VAR]",
        help="give this command the sandbox's secret NAME as variable VAR (default NAME)",
    )


def create_values(args: argparse.Namespace) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in getattr(args, "secret", None) or []:
        name, sep, value = item.partition("=")
        spec.validate_name(name)
        if not sep:
            if name not in os.environ:
                raise invalid(
                    f"--secret {name}: no value given and {name} is not in your environment",
                    f"use --secret {name}=VALUE, or export {name} first",
                )
            value = os.environ[name]
        values[name] = value
    for item in getattr(args, "secret_file", None) or []:
        name, sep, path = item.partition("=")
        spec.validate_name(name)
        if not sep or not path:
            raise invalid(f"--secret-file {name}: no path given", "use --secret-file NAME=PATH")
        try:
            values[name] = Path(path).expanduser().read_text().removesuffix("\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            raise invalid(
                f"--secret-file {name}: cannot read {path}: {reason}",
                "give a readable text file (encode binary data, e.g. base64)",
            ) from None
    return spec.validate_values(values)


def call_env(args: argparse.Namespace) -> list[str]:
    items = list(getattr(args, "secret_env", None) or [])
    for item in items:
        name, _, variable = item.partition("=")
        spec.validate_name(name)
        if variable:
            spec.validate_name(variable)
    return items
