"""A model's batching settings translated for the batching core: levels, expiries, shape keys.

The core (``_batchcore``) knows only integers; this module turns a request's priority,
timeout and non-batch shape into the level, expiry time and shape key the core queues it by.
"""

from __future__ import annotations

from collections.abc import Hashable

from volley.model.spec import ModelSpec, QueuePolicy
from volley.scheduler import _batchcore as core
from volley.scheduler.request import InferRequest

#: Distinct shapes remembered before the table is cleared (keys are never reused).
_MAX_SHAPE_KEYS = 4096
#: Queue bound of a model whose configuration sets none (``max_queue_size: 0`` or no
#: ``dynamic_batching``): a full queue answers UNAVAILABLE instead of growing without limit.
DEFAULT_MAX_QUEUE_SIZE = 1024


class QueueSettings:
    """The core queue of one model version, and the translation of requests into its terms."""

    def __init__(self, spec: ModelSpec) -> None:
        batching = spec.batching
        self._batching = batching
        self._policies: tuple[QueuePolicy, ...] = ()
        if batching is None:
            self.queue = core.BatchQueue(1, (1,), 0, 0, (DEFAULT_MAX_QUEUE_SIZE,), (False,))
        else:
            levels = batching.priority_levels
            policies = (
                [batching.queue_policy(level) for level in range(1, levels + 1)]
                if levels
                else [batching.default_queue_policy]
            )
            self._policies = tuple(policies)
            self.queue = core.BatchQueue(
                spec.max_batch_size,
                batching.preferred_batch_sizes,
                batching.max_queue_delay_us * 1000,
                levels,
                [p.max_queue_size or DEFAULT_MAX_QUEUE_SIZE for p in policies],
                [p.delay_on_timeout for p in policies],
            )
        self._keys: dict[Hashable, int] = {}
        self._next_key = 0

    def rows(self, request: InferRequest) -> int:
        """Rows the request occupies in a batch (1 for a model without batching)."""
        return request.rows if self._batching is not None else 1

    def shape_key(self, request: InferRequest) -> int:
        """An integer equal for requests that may share a batch, never reused for another shape.

        The table is bounded: when it is full it is cleared, and shapes seen again get new
        keys. Requests queued under an old key then only batch with each other, never with a
        request of a different shape.
        """
        key = self._keys.get(request.shape_key)
        if key is None:
            if len(self._keys) >= _MAX_SHAPE_KEYS:
                self._keys.clear()
            key = self._keys[request.shape_key] = self._next_key
            self._next_key += 1
        return key

    def level_and_expiry(self, request: InferRequest) -> tuple[int, int]:
        """The request's priority level and queue deadline (``monotonic_ns``; 0 = none)."""
        batching = self._batching
        if batching is None:
            return 0, 0
        level = batching.level_of(request.priority)
        policy = self._policies[level - 1 if level else 0]
        timeout_us = policy.effective_timeout_us(request.timeout_us)
        return level, (request.arrival_ns + timeout_us * 1000) if timeout_us else 0
