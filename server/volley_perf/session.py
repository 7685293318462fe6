"""One ``volley perf`` run as a library call: connect, prepare requests, profile, report."""

from __future__ import annotations

import asyncio
import os
import platform
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import volley

from .inputs import prepare_inputs, serialize_request
from .options import PerfOptions
from .pool import Driver, InProcessDriver, ProcessDriver, new_event_loop
from .profiler import LevelResult, Profiler
from .progress import ProgressLine
from .report import level_dict
from .server_stats import StatsProbe
from .target import ModelInfo, describe_model, open_channel

T = TypeVar("T")
#: Deadline of the metadata and statistics RPCs.
CONTROL_TIMEOUT_S = 10.0


@dataclass
class PerfReport:
    """The outcome of a run: the model as the server described it and each level's result."""

    options: PerfOptions
    model: ModelInfo
    levels: list[LevelResult]
    server_statistics: bool
    notes: list[str]

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        o = self.options
        p = o.profile
        return {
            "tool": "volley perf",
            "version": volley.__version__,
            "url": o.url,
            "model": self.model.name,
            "model_version": self.model.version,
            "max_batch_size": self.model.max_batch_size,
            "mode": p.mode,
            "batch_size": p.batch_size,
            "workers": o.workers,
            "input_data": o.inputs.data,
            "seed": p.seed,
            "window": (
                {"request_count": p.request_count}
                if p.request_count
                else {"measurement_interval_ms": p.measurement_interval_ms}
            ),
            "stability_percentage": p.stability_percentage,
            "max_trials": p.max_trials,
            "percentile": p.percentile,
            "server_statistics": self.server_statistics,
            "client_machine": {
                "cpu_count": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "notes": self.notes,
            "levels": [level_dict(r) for r in self.levels],
        }


async def perf(
    options: PerfOptions,
    on_level: Callable[[LevelResult], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> PerfReport:
    """Run ``volley perf`` with ``options`` on the current event loop."""
    channel = await open_channel(options.url, options.connect_timeout_s)
    try:
        model = await describe_model(
            channel,
            options.url,
            options.model,
            options.model_version,
            CONTROL_TIMEOUT_S,
            options.declared_inputs,
        )
        prepared = prepare_inputs(model, options.inputs)
        for note in prepared.notes:
            if on_note is not None:
                on_note(note)
        requests = [serialize_request(model, tensors) for tensors in prepared.requests]
        outputs = frozenset(t.name for t in model.outputs)
        probe = StatsProbe(channel, model.name, model.version, CONTROL_TIMEOUT_S)
        driver: Driver
        if options.workers == 1:
            driver = InProcessDriver(options.url, requests, outputs)
        else:
            driver = ProcessDriver(
                options.url, requests, outputs, options.workers, options.use_uvloop
            )
        line = ProgressLine() if options.show_progress else None
        try:
            await driver.start()
            profiler = Profiler(options.profile, driver, probe, line.show if line else None)
            levels = await profiler.run(on_level)
        finally:
            if line is not None:
                line.clear()
            await driver.close()
        return PerfReport(options, model, levels, probe.available, prepared.notes)
    finally:
        await channel.close(None)


def run_perf(
    options: PerfOptions,
    on_level: Callable[[LevelResult], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> PerfReport:
    """Run ``volley perf`` on a new event loop (uvloop when available and wanted)."""
    return run_on_new_loop(perf(options, on_level, on_note), options.use_uvloop)


def run_on_new_loop(coro: Coroutine[Any, Any, T], use_uvloop: bool) -> T:
    """Run ``coro`` to completion on a fresh event loop, then close the loop."""
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=lambda: new_event_loop(use_uvloop)) as runner:
            return runner.run(coro)
    loop = new_event_loop(use_uvloop)  # pragma: no cover - Python 3.10
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
