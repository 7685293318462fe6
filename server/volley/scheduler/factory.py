"""Pick the scheduler for a loaded model version."""

from __future__ import annotations

from volley.backends.base import LoadedModel
from volley.repository.spec import ModelSpec
from volley.scheduler.base import Scheduler
from volley.scheduler.batcher import DynamicBatcher
from volley.telemetry.stats import ModelStats


def create_scheduler(
    spec: ModelSpec, loaded: LoadedModel, stats: ModelStats, inline_threshold_us: int = 0
) -> Scheduler:
    """The scheduler that feeds ``loaded``'s instances: one path for every model.

    Models without ``dynamic_batching`` (or with ``max_batch_size: 0``) get batches of one
    request through the same batcher. Models whose batches execute in less than
    ``inline_threshold_us`` on average run them on the event-loop thread.
    """
    return DynamicBatcher(spec, loaded.instances, stats, inline_threshold_us)
