"""Device memory budgets: parsing ``--memory-budget DEVICE=SIZE`` and the devices' names.

Devices are ``cpu`` (host memory) and ``gpu0``, ``gpu1``, ...; sizes take binary (KiB, MiB,
GiB, TiB) or decimal (KB, MB, GB, TB) suffixes, or plain bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_DEVICE = re.compile(r"^(cpu|gpu\d+)$")


def parse_size(text: str) -> int:
    """``2GiB`` -> 2147483648; ValueError for anything else."""
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"bad size '{text}': use bytes or a unit such as 512MiB or 2GiB")
    return int(float(match.group(1)) * _UNITS[unit])


def parse_budgets(specs: Iterable[str]) -> dict[str, int]:
    """``["cpu=2GiB", "gpu0=20GiB"]`` (entries may also be comma-separated) -> bytes by device."""
    budgets: dict[str, int] = {}
    for spec in specs:
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            device, sep, size = item.partition("=")
            device = device.strip().lower()
            if not sep or not _DEVICE.match(device):
                raise ValueError(
                    f"bad --memory-budget '{item}': expected DEVICE=SIZE with DEVICE cpu or "
                    "gpuN, e.g. cpu=2GiB"
                )
            if device in budgets:
                raise ValueError(f"--memory-budget: device '{device}' is given twice")
            budgets[device] = parse_size(size)
    return budgets


def device_name(kind: str, device_id: int) -> str:
    """``("CPU", 0)`` -> ``cpu``; ``("GPU", 1)`` -> ``gpu1``."""
    return "cpu" if kind.upper() == "CPU" else f"gpu{device_id}"


def format_bytes(size: int) -> str:
    """A size for messages: ``41.9 MiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.1f} GiB"
