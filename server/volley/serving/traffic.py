"""Routing requests by a model's release policy: weighted split, sticky keys, shadow copies.

``Router.pick`` chooses the version of a request that names none: by weight among the split's
READY versions, or, with a sticky parameter, by a hash of its value (the same value always maps
to the same point, across requests and restarts, so a caller stays on one version while the
weights stay). ``Router.shadowed`` says whether a served request is copied to the shadow
version; ``compare`` scores a shadow's outputs against the primary's.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from volley.repository.traffic import TrafficPolicy
from volley.telemetry.stats import ShadowStats

if TYPE_CHECKING:
    from volley.serving.registry import ModelEntry, ModelVersion


def _unit(key: str) -> float:
    """A stable point in [0, 1) for ``key``."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class Router:
    """The request-path view of a ``TrafficPolicy``."""

    __slots__ = ("_credit", "_random", "policy", "sticky")

    def __init__(self, policy: TrafficPolicy) -> None:
        self.policy = policy
        self.sticky = policy.sticky_parameter
        self._random = random.Random()
        self._credit = 0.0

    def pick(
        self, entry: ModelEntry, parameters: Mapping[str, object] | None
    ) -> ModelVersion | None:
        """The version a request naming no version runs on (None: the model's default)."""
        split = self.policy.split
        if not split:
            return None
        candidates: list[tuple[ModelVersion, float]] = []
        total = 0.0
        for version, weight in split:
            mv = entry.versions.get(version)
            if mv is not None and mv.ready and weight > 0:
                candidates.append((mv, weight))
                total += weight
        if not candidates:
            return None
        key = None
        if self.sticky and parameters:
            value = parameters.get(self.sticky)
            if value is not None:
                key = str(value)
        point = (_unit(key) if key is not None else self._random.random()) * total
        for mv, weight in candidates:
            point -= weight
            if point < 0:
                return mv
        return candidates[-1][0]

    def shadowed(self) -> bool:
        """Whether this request is copied to the shadow (exactly ``percent`` % over time)."""
        shadow = self.policy.shadow
        if shadow is None:
            return False
        self._credit += shadow.percent / 100.0
        if self._credit >= 1.0:
            self._credit -= 1.0
            return True
        return False


def compare(
    primary: Mapping[str, np.ndarray], shadow: Mapping[str, np.ndarray], stats: ShadowStats
) -> None:
    """Score the shadow's outputs against the primary's (outputs both returned)."""
    worst = 0.0
    for name, a in primary.items():
        b = shadow.get(name)
        if b is None:
            continue
        if a.shape != b.shape or a.dtype.kind != b.dtype.kind:
            stats.mismatched += 1
            return
        if a.dtype.kind in "OSUb":
            if not np.array_equal(a, b):
                worst = max(worst, 1.0)
            continue
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        if diff.size:
            worst = max(worst, float(np.nanmax(diff)) if not np.isnan(diff).all() else np.inf)
        if a.ndim >= 2 and a.shape[-1] > 1:
            rows = int(np.prod(a.shape[:-1]))
            agree = np.argmax(a, axis=-1) == np.argmax(b, axis=-1)
            stats.top1_rows += rows
            stats.top1_agree += int(np.count_nonzero(agree))
    stats.record_diff(worst)
