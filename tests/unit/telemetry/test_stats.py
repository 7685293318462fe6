"""``ModelStats``: the counters the statistics RPC reports, exactly."""

from __future__ import annotations

import time

from volley.telemetry.stats import BatchRow, Duration, ModelStats


def test_new_stats_are_zero() -> None:
    stats = ModelStats("m", 3)
    assert (stats.name, stats.version) == ("m", 3)
    for duration in (
        stats.success,
        stats.fail,
        stats.queue,
        stats.compute_input,
        stats.compute_infer,
        stats.compute_output,
    ):
        assert (duration.count, duration.ns) == (0, 0)
    assert (stats.inference_count, stats.execution_count, stats.last_inference_ms) == (0, 0, 0)
    assert stats.batches == {}
    assert stats.memory_bytes == {}


def test_durations_are_independent_objects() -> None:
    stats = ModelStats("m", 1)
    stats.success.add(5)
    assert (stats.fail.count, stats.queue.count) == (0, 0)


def test_duration_add() -> None:
    d = Duration()
    d.add(10)
    d.add(32, count=3)
    assert (d.count, d.ns) == (4, 42)


def test_record_request() -> None:
    stats = ModelStats("m", 1)
    stats.record_request(rows=3, queue_ns=100, input_ns=10, infer_ns=1000, output_ns=20)
    stats.record_request(rows=2, queue_ns=50, input_ns=1, infer_ns=2, output_ns=3)
    assert stats.inference_count == 5
    assert (stats.queue.count, stats.queue.ns) == (2, 150)
    assert (stats.compute_input.count, stats.compute_input.ns) == (2, 11)
    assert (stats.compute_infer.count, stats.compute_infer.ns) == (2, 1002)
    assert (stats.compute_output.count, stats.compute_output.ns) == (2, 23)
    # Requests are not executions and not outcomes.
    assert stats.execution_count == 0
    assert stats.batches == {}
    assert (stats.success.count, stats.fail.count) == (0, 0)


def test_record_execution_rows_per_batch_size() -> None:
    stats = ModelStats("m", 1)
    stats.record_execution(batch_size=4, input_ns=1, infer_ns=100, output_ns=2)
    stats.record_execution(batch_size=1, input_ns=3, infer_ns=30, output_ns=4)
    stats.record_execution(batch_size=4, input_ns=5, infer_ns=200, output_ns=6)
    assert stats.execution_count == 3
    assert sorted(stats.batches) == [1, 4]
    four, one = stats.batches[4], stats.batches[1]
    assert isinstance(four, BatchRow)
    assert (four.compute_input.count, four.compute_input.ns) == (2, 6)
    assert (four.compute_infer.count, four.compute_infer.ns) == (2, 300)
    assert (four.compute_output.count, four.compute_output.ns) == (2, 8)
    assert (one.compute_input.count, one.compute_input.ns) == (1, 3)
    assert (one.compute_infer.count, one.compute_infer.ns) == (1, 30)
    assert (one.compute_output.count, one.compute_output.ns) == (1, 4)
    # Executions do not touch the per-request totals.
    assert stats.inference_count == 0
    assert stats.compute_infer.count == 0


def test_record_success_and_failure() -> None:
    stats = ModelStats("m", 1)
    before_ms = time.time_ns() // 1_000_000
    stats.record_success(700)
    stats.record_success(300)
    stats.record_failure(55)
    after_ms = time.time_ns() // 1_000_000
    assert (stats.success.count, stats.success.ns) == (2, 1000)
    assert (stats.fail.count, stats.fail.ns) == (1, 55)
    assert before_ms <= stats.last_inference_ms <= after_ms
    assert stats.inference_count == 0
    assert stats.execution_count == 0


def test_failure_alone_sets_last_inference() -> None:
    stats = ModelStats("m", 1)
    stats.record_failure(1)
    assert stats.last_inference_ms > 0
    assert stats.success.count == 0
