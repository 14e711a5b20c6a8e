"""Regenerate the protobuf modules and their typed stubs from grove.proto.

    python -m engine.api.codegen          # rewrite grove_pb2*.py and their .pyi stubs
    python -m engine.api.codegen --check  # exit 1 if the checked-in files are stale

The .pyi stubs (mypy-protobuf) are what lets mypy check the client against the API.
"""

from __future__ import annotations

import argparse
import filecmp
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUTPUTS = ("grove_pb2.py", "grove_pb2.pyi", "grove_pb2_grpc.py", "grove_pb2_grpc.pyi")


def generate(into: Path) -> None:
    """Write the generated files for engine/api/grove.proto under into/engine/api/."""
    (into / "engine" / "api").mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent  # the plugins sit next to this interpreter
    command = [
        sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={into}", f"--grpc_python_out={into}",
        f"--mypy_out={into}", f"--mypy_grpc_out={into}",
        str(HERE.relative_to(ROOT) / "grove.proto"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"protoc failed: {result.stderr.strip()}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.api.codegen")
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / "engine" / "api"
        stale = [n for n in OUTPUTS if not (HERE / n).exists()
                 or not filecmp.cmp(fresh / n, HERE / n, shallow=False)]  # fmt: skip
        if args.check:
            for name in stale:
                print(f"engine/api/{name} is stale: run python -m engine.api.codegen")
            return 1 if stale else 0
        for name in OUTPUTS:
            (HERE / name).write_bytes((fresh / name).read_bytes())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
