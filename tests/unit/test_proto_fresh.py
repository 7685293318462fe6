"""The generated code in server/volley/_proto matches what protos/ generates now."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "server" / "volley" / "_proto" / "inference"
#: The grpcio-tools release that generated a file: a newer patch release of the tools
#: regenerates the same code with another number here.
_TOOLS_VERSION = re.compile(r"^GRPC_GENERATED_VERSION = .*$", re.MULTILINE)


def _text(path: Path) -> str:
    return _TOOLS_VERSION.sub("GRPC_GENERATED_VERSION = ...", path.read_text())


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate", ROOT / "protos" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(tmp_path)
    fresh = {p.name: _text(p) for p in (tmp_path / "inference").iterdir() if p.is_file()}
    committed = {p.name: _text(p) for p in COMMITTED.iterdir() if p.is_file()}
    assert len(fresh) >= 9
    assert fresh.keys() == committed.keys()
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"regenerate with `make proto`: {stale} ({sys.executable})"
