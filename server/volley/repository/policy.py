"""Version policy: which of a model's versions are served (``latest`` / ``all`` / ``specific``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from volley._proto.inference import model_config_pb2 as mc
from volley.errors import ConfigError

logger = logging.getLogger("volley.repository")


def select_versions(
    policy: mc.ModelVersionPolicy, available: Iterable[int], *, path: str = ""
) -> list[int]:
    """Versions selected by ``policy`` among ``available``, sorted ascending.

    No policy set means ``latest { num_versions: 1 }``; ``latest { num_versions: 0 }`` selects
    nothing. ``specific`` versions that are not available are skipped with a warning, and a
    ``specific`` policy that selects nothing is a ``ConfigError``.
    """
    present = sorted(set(available))
    choice = policy.WhichOneof("policy_choice")
    if choice is None:
        return present[-1:]
    if choice == "latest":
        count = int(policy.latest.num_versions)
        return present[-count:] if count > 0 else []
    if choice == "all":
        return present
    wanted = sorted({int(v) for v in policy.specific.versions})
    missing = [v for v in wanted if v not in present]
    for version in missing:
        logger.warning(
            "%s: version %d named by the version policy does not exist", path or "model", version
        )
    selected = [v for v in wanted if v in present]
    if not selected:
        asked = ", ".join(str(v) for v in wanted) or "none"
        have = ", ".join(str(v) for v in present) or "none"
        raise ConfigError(
            f"version policy 'specific' selects no available version (asked: {asked}; "
            f"available: {have})",
            path=path,
            hint="list versions whose directories exist, or use 'latest' or 'all'",
        )
    return selected
