"""Pick the scheduler for a loaded model version."""

from __future__ import annotations

from volley.backends.base import LoadedModel
from volley.repository.spec import ModelSpec
from volley.scheduler.base import Scheduler
from volley.scheduler.batcher import DynamicBatcher
from volley.telemetry.stats import ModelStats


def create_scheduler(spec: ModelSpec, loaded: LoadedModel, stats: ModelStats) -> Scheduler:
    """The scheduler that feeds ``loaded``'s instances: one path for every model.

    Models without ``dynamic_batching`` (or with ``max_batch_size: 0``) get batches of one
    request through the same batcher.
    """
    return DynamicBatcher(spec, loaded.instances, stats)
