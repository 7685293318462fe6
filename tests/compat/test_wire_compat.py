"""Volley's protos carry every message, field number, type, enum value and RPC of Triton's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DUMP = Path(__file__).with_name("_descriptor_dump.py")


def dump(which: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, str(DUMP), which], check=True, capture_output=True, text=True
    ).stdout
    return set(out.splitlines())


def test_volley_protos_are_a_superset_of_tritonclients() -> None:
    volley, triton = dump("volley"), dump("tritonclient")
    assert len(triton) > 350
    missing = sorted(triton - volley)
    assert not missing, "\n".join(missing[:20])
