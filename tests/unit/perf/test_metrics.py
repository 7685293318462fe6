"""volley perf: percentiles and the merging of worker results and windows."""

from __future__ import annotations

from array import array

import numpy as np
import pytest
from volley_perf.metrics import Measurement, from_results, merge, percentile
from volley_perf.server_stats import ServerCounters
from volley_perf.worker import WorkerResult


def test_nearest_rank_percentile() -> None:
    values = np.arange(1, 101, dtype=np.int64)
    assert percentile(values, 50) == 50
    assert percentile(values, 90) == 90
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    small = np.array([1, 2, 3, 4], dtype=np.int64)
    assert percentile(small, 50) == 2
    assert percentile(small, 51) == 3
    assert percentile(small, 99) == 4
    assert percentile(np.zeros(0, dtype=np.int64), 99) == 0.0
    assert percentile(np.array([7], dtype=np.int64), 1) == 7


def test_percentile_matches_sorted_index_on_random_data() -> None:
    rng = np.random.default_rng(1)
    values = np.sort(rng.integers(0, 10**6, 1000))
    for p in (50, 90, 95, 99):
        assert percentile(values, p) == values[int(np.ceil(p / 100 * 1000)) - 1]


def _result(latencies: list[int], begin: int, end: int, cpu: int, **kw: object) -> WorkerResult:
    return WorkerResult(
        latencies_ns=array("q", latencies),
        sent=len(latencies),
        ok=len(latencies),
        begin_ns=begin,
        end_ns=end,
        cpu_ns=cpu,
        **kw,  # type: ignore[arg-type]
    )


def test_from_results_combines_workers() -> None:
    a = _result([3000, 1000], begin=100, end=1_000_100, cpu=250_000)
    b = _result([2000], begin=200, end=2_000_200, cpu=500_000, errors={"UNAVAILABLE": 2})
    b.sent += 2
    m = from_results([a, b], ServerCounters(success_count=3))
    assert m.sent == 5 and m.ok == 3 and m.failed == 2
    assert m.errors == {"UNAVAILABLE": 2}
    assert list(m.latencies_ns) == [1000, 2000, 3000]
    assert m.elapsed_ns == 2_000_200 - 100
    assert m.client_busy() == pytest.approx([0.25, 0.25])
    assert m.client_cpu_us_per_request() == pytest.approx(750_000 / 5 / 1e3)
    assert m.requests_per_s() == pytest.approx(3 / (2_000_100 / 1e9))
    assert m.avg_latency_us() == pytest.approx(2.0)
    summary = m.latency_summary_us()
    assert summary["p50"] == 2.0 and summary["max"] == 3.0 and summary["min"] == 1.0


def test_merge_windows_sums_counts_time_and_server() -> None:
    w1 = Measurement(
        sent=10,
        ok=10,
        elapsed_ns=10**9,
        cpu_ns=[1],
        wall_ns=[2],
        latencies_ns=np.array([5, 1], dtype=np.int64),
        server=ServerCounters(success_count=10, queue_ns=100),
    )
    w2 = Measurement(
        sent=30,
        ok=29,
        errors={"INTERNAL": 1},
        elapsed_ns=2 * 10**9,
        cpu_ns=[3],
        wall_ns=[4],
        latencies_ns=np.array([3], dtype=np.int64),
        server=ServerCounters(success_count=29, queue_ns=290),
    )
    m = merge([w1, w2])
    assert (m.sent, m.ok, m.errors) == (40, 39, {"INTERNAL": 1})
    assert m.requests_per_s() == pytest.approx(39 / 3)
    assert list(m.latencies_ns) == [1, 3, 5]
    assert m.cpu_ns == [4] and m.wall_ns == [6]
    assert m.server == ServerCounters(success_count=39, queue_ns=390)
    assert m.server.per_request_us()["queue"] == pytest.approx(390 / 39 / 1e3)


def test_merge_drops_server_view_unless_every_window_has_it() -> None:
    w1 = Measurement(sent=1, ok=1, elapsed_ns=1, server=ServerCounters(success_count=1))
    w2 = Measurement(sent=1, ok=1, elapsed_ns=1, server=None)
    assert merge([w1, w2]).server is None


def test_counter_difference() -> None:
    before = ServerCounters(success_count=5, inference_count=20, compute_infer_ns=7)
    after = ServerCounters(success_count=8, inference_count=32, compute_infer_ns=10)
    assert after - before == ServerCounters(success_count=3, inference_count=12, compute_infer_ns=3)
