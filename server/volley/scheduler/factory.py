"""Pick the scheduler for a loaded model version."""

from __future__ import annotations

from volley.backends.base import LoadedModel
from volley.repository.spec import ModelSpec
from volley.scheduler.base import Scheduler
from volley.scheduler.direct import DirectScheduler
from volley.telemetry.stats import ModelStats


def create_scheduler(spec: ModelSpec, loaded: LoadedModel, stats: ModelStats) -> Scheduler:
    """The scheduler that feeds ``loaded``'s instances."""
    return DirectScheduler(spec.name, loaded.instances, stats)
