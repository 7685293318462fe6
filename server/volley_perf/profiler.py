"""The measurement procedure: for each load level, windows until stable, as perf_analyzer does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .errors import PerfError
from .metrics import Measurement, from_results, merge
from .pool import Driver, split, start_time_ns
from .server_stats import ServerCounters, StatsProbe
from .stability import STABILITY_WINDOW, is_stable
from .worker import WindowPlan

Mode = Literal["concurrency", "request_rate"]
#: An open-loop level keeps up when at most this share of its requests went out late.
MAX_DELAYED_SHARE = 0.1
#: Head start given to worker processes so that all begin a window together.
PROCESS_LEAD_S = 0.05
PROGRESS_PERIOD_S = 0.5


@dataclass(frozen=True)
class ProfileSettings:
    """How to load the server and when a level's measurement is done."""

    mode: Mode
    #: Concurrency levels or request rates (requests per second).
    levels: Sequence[float]
    batch_size: int = 1
    #: Requests per window; 0 means windows of ``measurement_interval_ms``.
    request_count: int = 0
    measurement_interval_ms: int = 5000
    stability_percentage: float = 10.0
    max_trials: int = 10
    #: Latency percentile the stability check and threshold use; ``None``: the average.
    percentile: int | None = None
    #: Stop raising the load once the latency metric exceeds this many milliseconds.
    latency_threshold_ms: float | None = None
    #: Open loop: Poisson arrivals instead of constant gaps.
    poisson: bool = False
    #: Open loop: the most requests in flight (over all workers).
    max_inflight: int = 256
    seed: int = 0
    request_timeout_s: float | None = 30.0
    #: Requests sent at each level before measuring (not reported as measured).
    warmup_request_count: int = 0
    #: Send over one ``ModelStreamInfer`` stream per concurrency slot (concurrency mode).
    streaming: bool = False


@dataclass
class LevelResult:
    """The outcome of one load level."""

    mode: Mode
    level: float
    batch_size: int
    #: The windows the result stands on merged (the last ``STABILITY_WINDOW`` of them).
    summary: Measurement
    #: Every window measured at this level, in order.
    windows: list[Measurement] = field(default_factory=list)
    #: ``None`` when too few windows were allowed to judge.
    stable: bool | None = None
    warmup: Measurement | None = None

    def inferences_per_s(self) -> float:
        """Successful inferences per second: requests per second times the batch size."""
        return self.summary.requests_per_s() * self.batch_size

    @property
    def kept_up(self) -> bool:
        """Open loop: whether requests went out on schedule (always true for closed loop)."""
        if self.mode != "request_rate" or not self.summary.sent:
            return True
        return self.summary.delayed <= MAX_DELAYED_SHARE * self.summary.sent


def latency_metric_us(measurement: Measurement, percentile: int | None) -> float:
    """The latency the stability rule and the threshold look at, in microseconds."""
    if percentile is None:
        return measurement.avg_latency_us()
    return measurement.latency_us(percentile)


class Profiler:
    """Runs the levels of ``settings`` on ``driver`` and collects their results."""

    def __init__(
        self,
        settings: ProfileSettings,
        driver: Driver,
        probe: StatsProbe | None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self._s = settings
        self._driver = driver
        self._probe = probe
        self._progress = progress
        self._status = ""
        self._window_started = 0.0
        self._windows_run = 0
        self._last_after: ServerCounters | None = None

    async def run(self, on_level: Callable[[LevelResult], None] | None = None) -> list[LevelResult]:
        """Measure every level (stopping early past the latency threshold)."""
        ticker = asyncio.create_task(self._tick()) if self._progress else None
        results: list[LevelResult] = []
        try:
            for level in self._s.levels:
                result = await self.measure_level(level)
                results.append(result)
                if on_level is not None:
                    on_level(result)
                threshold = self._s.latency_threshold_ms
                if threshold is not None and (
                    latency_metric_us(result.summary, self._s.percentile) > threshold * 1e3
                ):
                    break
        finally:
            if ticker is not None:
                ticker.cancel()
                await asyncio.gather(ticker, return_exceptions=True)
        return results

    async def measure_level(self, level: float) -> LevelResult:
        """Windows at ``level`` until the last few agree or ``max_trials`` is reached."""
        s = self._s
        label = _label(s.mode, level)
        warmup = None
        if s.warmup_request_count > 0:
            self._status = f"{label}  warm-up"
            warmup = await self._window(level, s.warmup_request_count, None)
        windows: list[Measurement] = []
        before = await self._snapshot()
        stable: bool | None = None
        for trial in range(1, s.max_trials + 1):
            self._status = f"{label}  window {trial}/{s.max_trials}"
            window = await self._window(level, s.request_count, before)
            before = self._last_after
            windows.append(window)
            if s.max_trials < STABILITY_WINDOW:
                continue
            stable = is_stable(
                [w.requests_per_s() for w in windows],
                [latency_metric_us(w, s.percentile) for w in windows],
                s.stability_percentage,
            )
            if stable:
                break
        return LevelResult(
            mode=s.mode,
            level=level,
            batch_size=s.batch_size,
            summary=merge(windows[-STABILITY_WINDOW:]),
            windows=windows,
            stable=stable,
            warmup=warmup,
        )

    async def _window(
        self, level: float, request_count: int, before: ServerCounters | None
    ) -> Measurement:
        plans = self._plans(level, request_count)
        self._window_started = time.monotonic()
        results = await self._driver.run_window(plans)
        self._windows_run += 1
        after = await self._snapshot()
        self._last_after = after
        delta = after - before if (after is not None and before is not None) else None
        measurement = from_results(results, delta)
        if measurement.ok == 0 and measurement.failed:
            raise PerfError(
                f"all {measurement.failed} requests failed at {_label(self._s.mode, level)}: "
                f"{measurement.first_error}"
            )
        return measurement

    async def _snapshot(self) -> ServerCounters | None:
        return await self._probe.snapshot() if self._probe is not None else None

    def _plans(self, level: float, request_count: int) -> list[WindowPlan | None]:
        s = self._s
        workers = self._driver.workers
        if s.mode == "concurrency":
            slots = split(int(level), workers)
        else:
            slots = [max(1, n) for n in split(s.max_inflight, workers)]
        active = [i for i in range(workers) if slots[i] > 0]
        counts = split(request_count, len(active)) if request_count else [0] * len(active)
        start = start_time_ns(PROCESS_LEAD_S if workers > 1 else 0.0)
        plans: list[WindowPlan | None] = [None] * workers
        for index, count in zip(active, counts, strict=True):
            if request_count and count == 0:
                continue
            plans[index] = WindowPlan(
                concurrency=slots[index],
                rate=level / len(active) if s.mode == "request_rate" else 0.0,
                poisson=s.poisson,
                request_count=count,
                duration_ns=s.measurement_interval_ms * 1_000_000,
                start_ns=start,
                seed=s.seed * 1_000_003 + index * 7919 + self._windows_run,
                timeout_s=s.request_timeout_s,
                streaming=s.streaming,
            )
        return plans

    async def _tick(self) -> None:
        assert self._progress is not None
        while True:
            elapsed = time.monotonic() - self._window_started if self._window_started else 0.0
            if self._status:
                done = self._driver.completed()
                self._progress(f"{self._status}  {done} requests  {elapsed:.1f} s")
            await asyncio.sleep(PROGRESS_PERIOD_S)


def _label(mode: Mode, level: float) -> str:
    if mode == "concurrency":
        return f"concurrency {int(level)}"
    return f"request rate {level:g}/s"
