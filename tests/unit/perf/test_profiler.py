"""volley perf: the window loop (stability, max trials, latency threshold, load split)."""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import pytest
from volley_perf.errors import PerfError
from volley_perf.profiler import LevelResult, Profiler, ProfileSettings
from volley_perf.server_stats import ServerCounters
from volley_perf.worker import WindowPlan, WorkerResult


class FakeDriver:
    """Each window: every active worker answers ``per_worker`` requests of ``latency_ns``."""

    def __init__(
        self, workers: int, rates: Sequence[float], latency_ns: int = 1_000_000, fail: bool = False
    ) -> None:
        self.workers = workers
        self.fail = fail
        self.rates = list(rates)  # requests per second of successive windows
        self.latency_ns = latency_ns
        self.plans: list[list[WindowPlan | None]] = []

    async def start(self) -> None:
        pass

    async def run_window(self, plans: Sequence[WindowPlan | None]) -> list[WorkerResult]:
        self.plans.append(list(plans))
        rate = self.rates[min(len(self.plans) - 1, len(self.rates) - 1)]
        results = []
        for plan in plans:
            if plan is None:
                continue
            n = plan.request_count or 100
            results.append(
                WorkerResult(
                    latencies_ns=array("q", [self.latency_ns * plan.concurrency] * n),
                    sent=n, ok=n, begin_ns=0, end_ns=int(n / rate * 1e9), cpu_ns=1000,
                )
            )  # fmt: skip
            if self.fail:
                results[-1].ok = 0
                results[-1].latencies_ns = array("q")
                results[-1].errors = {"INVALID_ARGUMENT": n}
                results[-1].first_error = "INVALID_ARGUMENT: bad shape"
        return results

    def completed(self) -> int:
        return 0

    async def close(self) -> None:
        pass


class FakeProbe:
    def __init__(self) -> None:
        self.total = 0

    async def snapshot(self) -> ServerCounters:
        self.total += 100
        return ServerCounters(success_count=self.total)


def settings(**kw: object) -> ProfileSettings:
    args: dict[str, object] = {"mode": "concurrency", "levels": [1], "request_count": 100}
    args.update(kw)
    return ProfileSettings(**args)  # type: ignore[arg-type]


async def test_stops_once_three_windows_agree() -> None:
    driver = FakeDriver(1, [100, 300, 1000, 1010, 1020, 1000])
    (result,) = await Profiler(settings(), driver, None).run()
    assert len(result.windows) == 5 and result.stable is True
    assert result.summary.sent == 300  # the last three windows merged


async def test_unstable_after_max_trials() -> None:
    driver = FakeDriver(1, [100, 200, 400, 800, 1600])
    (result,) = await Profiler(settings(max_trials=4), driver, None).run()
    assert len(result.windows) == 4 and result.stable is False


async def test_fewer_trials_than_the_stability_window_are_not_judged() -> None:
    (result,) = await Profiler(settings(max_trials=1), FakeDriver(1, [5]), None).run()
    assert len(result.windows) == 1 and result.stable is None


async def test_latency_threshold_stops_raising_the_load() -> None:
    seen: list[LevelResult] = []
    profile = settings(levels=[1, 2, 4, 8], latency_threshold_ms=1.5)
    results = await Profiler(profile, FakeDriver(1, [100]), None).run(seen.append)
    assert [r.level for r in results] == [1, 2] and seen == results


async def test_server_counters_are_taken_around_each_window() -> None:
    (result,) = await Profiler(settings(), FakeDriver(1, [100]), FakeProbe()).run()  # type: ignore[arg-type]
    assert all(w.server == ServerCounters(success_count=100) for w in result.windows)
    assert result.summary.server == ServerCounters(success_count=300)


async def test_load_is_split_over_workers() -> None:
    driver = FakeDriver(3, [100])
    profile = settings(levels=[7], request_count=10, max_trials=1)
    await Profiler(profile, driver, None).run()
    (plans,) = driver.plans
    assert [p.concurrency for p in plans if p] == [3, 2, 2]
    assert [p.request_count for p in plans if p] == [4, 3, 3]
    assert len({p.start_ns for p in plans if p}) == 1
    driver = FakeDriver(3, [100])
    await Profiler(settings(levels=[2], request_count=0, max_trials=1), driver, None).run()
    assert driver.plans[0][2] is None  # concurrency 2 over 3 workers leaves one idle


async def test_rate_mode_splits_the_rate() -> None:
    driver = FakeDriver(2, [100])
    profile = settings(mode="request_rate", levels=[300.0], max_inflight=9, max_trials=1,
                       poisson=True)  # fmt: skip
    (result,) = await Profiler(profile, driver, None).run()
    (plans,) = driver.plans
    assert [(p.rate, p.concurrency, p.poisson) for p in plans if p] == [
        (150.0, 5, True), (150.0, 4, True)]  # fmt: skip
    assert result.kept_up


async def test_a_window_where_every_request_failed_stops_the_run() -> None:
    with pytest.raises(PerfError, match="all 100 requests failed at concurrency 1: INVALID_ARG"):
        await Profiler(settings(), FakeDriver(1, [100], fail=True), None).run()
