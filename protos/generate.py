"""Generate Volley's protobuf/gRPC modules (and their type stubs) from ``protos/``.

``python protos/generate.py [OUT]`` writes ``OUT/inference/*`` (default:
``server/volley/_proto``), with imports rewritten to live under ``volley._proto``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PROTOS = Path(__file__).resolve().parent
DEFAULT_OUT = PROTOS.parent / "server" / "volley" / "_proto"


def generate(out: Path) -> None:
    """Regenerate ``out/inference`` from the ``.proto`` files."""
    target = out / "inference"
    shutil.rmtree(target, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "inference").glob("*.proto"))
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTOS}",
            f"--python_out={out}", f"--grpc_python_out={out}",
            f"--mypy_out={out}", f"--mypy_grpc_out={out}", *sources,
        ],
        check=True, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    (target / "__init__.py").touch()
    for path in sorted([*target.glob("*.py"), *target.glob("*.pyi")]):
        lines = path.read_text().splitlines(keepends=True)
        fixed = [
            line.replace("from inference import", "from volley._proto.inference import", 1)
            if line.startswith("from inference import")
            else line
            for line in lines
        ]
        path.write_text("".join(fixed))


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
