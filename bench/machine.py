"""The machine a benchmark ran on: CPU count and model."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe() -> dict[str, object]:
    """Cores, CPU model, OS and Python version."""
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def short(machine: dict[str, object]) -> str:
    """A one-cell summary, e.g. ``2 x AMD EPYC``."""
    return f"{machine.get('cores')} x {machine.get('cpu_model')}"
