"""Restricted API groups, as Triton's ``--grpc-restricted-protocol=<groups>:<key>=<value>``.

A call of a restricted group must carry the header ``triton-grpc-protocol-<key>: <value>``;
without it the call is refused with UNAVAILABLE and Triton's text, so clients written for
Triton work unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from volley.errors import Unavailable

#: Every API group and, for messages, the RPCs in it.
GROUPS: dict[str, tuple[str, ...]] = {
    "health": ("ServerLive", "ServerReady", "ModelReady", "grpc.health.v1.Health/Check"),
    "metadata": ("ServerMetadata", "ModelMetadata"),
    "inference": ("ModelInfer", "ModelStreamInfer"),
    "shared-memory": (
        "SystemSharedMemoryStatus",
        "SystemSharedMemoryRegister",
        "SystemSharedMemoryUnregister",
        "CudaSharedMemoryStatus",
        "CudaSharedMemoryRegister",
        "CudaSharedMemoryUnregister",
    ),
    "model-config": ("ModelConfig",),
    "model-repository": ("RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"),
    "statistics": ("ModelStatistics",),
    "trace": ("TraceSetting",),
    "logging": ("LogSettings",),
}

HEADER_PREFIX = "triton-grpc-protocol-"

#: group -> (header name, required value)
Restrictions = Mapping[str, tuple[str, str]]


def parse(specs: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Parse ``<group>[,<group>...]:<key>=<value>`` specifications; ValueError when malformed."""
    restricted: dict[str, tuple[str, str]] = {}
    for spec in specs:
        groups, sep, pair = spec.partition(":")
        key, eq, value = pair.partition("=")
        if not sep or not eq or not groups or not key.strip():
            raise ValueError(
                f"--grpc-restricted-protocol '{spec}': expected '<groups>:<key>=<value>', "
                "e.g. 'model-repository,shared-memory:admin-key=secret'"
            )
        for group in (g.strip() for g in groups.split(",")):
            if group not in GROUPS:
                raise ValueError(
                    f"--grpc-restricted-protocol '{spec}': unknown group '{group}'; groups are "
                    f"{', '.join(GROUPS)}"
                )
            if group in restricted:
                raise ValueError(f"--grpc-restricted-protocol: group '{group}' is given twice")
            restricted[group] = (HEADER_PREFIX + key.strip().lower(), value)
    return restricted


def check(restrictions: Restrictions, group: str, context: Any) -> None:
    """Raise UNAVAILABLE unless the call carries the header its restricted group needs."""
    needed = restrictions.get(group)
    if needed is None:
        return
    header, value = needed
    for key, given in context.invocation_metadata() or ():
        if key == header and given == value:
            return
    raise Unavailable(f"This protocol is restricted, expecting header '{header}'")
