"""Per-model-version statistics, as the protocol's ``ModelStatistics`` RPC reports them.

The one recorder of what happened to requests: the service records each request's outcome,
the batcher each executed batch. Updated only from the event-loop thread, so plain integer
fields need no lock. Transports turn a ``ModelStats`` into their own message.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable

#: Upper bounds (ns) of the latency histograms: 50 µs to 60 s, roughly x2.5 apart.
LATENCY_BOUNDS_NS: tuple[int, ...] = tuple(
    int(us * 1000)
    for us in (
        50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
        500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
    )
)  # fmt: skip
#: Upper bounds of the batch-size histogram (rows per execution).
BATCH_BOUNDS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

#: Failure reasons, as Triton labels ``nv_inference_request_failure``.
FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")


class Histogram:
    """Counts per bucket (cumulated only when exported) and the sum of observed values."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[int, ...]) -> None:
        self.bounds = bounds
        #: One count per bound, then the overflow (+Inf) bucket.
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0

    def observe(self, value: int) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[int]:
        """Counts of values <= each bound, then the total (Prometheus' ``le`` buckets)."""
        out, running = [], 0
        for count in self.counts:
            running += count
            out.append(running)
        return out


class Duration:
    """A count and a cumulative duration in nanoseconds."""

    __slots__ = ("count", "ns")

    def __init__(self) -> None:
        self.count = 0
        self.ns = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


class BatchRow:
    """Statistics of executions at one batch size."""

    __slots__ = ("compute_infer", "compute_input", "compute_output")

    def __init__(self) -> None:
        self.compute_input = Duration()
        self.compute_infer = Duration()
        self.compute_output = Duration()


class ModelStats:
    """Cumulative counters of one model version since it was loaded."""

    def __init__(self, name: str, version: int) -> None:
        self.name = name
        self.version = version
        self.success = Duration()
        self.fail = Duration()
        self.queue = Duration()
        self.compute_input = Duration()
        self.compute_infer = Duration()
        self.compute_output = Duration()
        self.inference_count = 0
        self.execution_count = 0
        self.last_inference_ms = 0
        self.batches: dict[int, BatchRow] = {}
        self.memory_bytes: dict[tuple[str, int], int] = {}
        #: Failures by Triton's reason (REJECTED, CANCELED, BACKEND, OTHER).
        self.fail_reasons = dict.fromkeys(FAILURE_REASONS, 0)
        self.request_hist = Histogram(LATENCY_BOUNDS_NS)
        self.queue_hist = Histogram(LATENCY_BOUNDS_NS)
        self.compute_hist = Histogram(LATENCY_BOUNDS_NS)
        self.batch_hist = Histogram(BATCH_BOUNDS)

    def record_request(
        self, rows: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """One request executed (as part of a batch): its share of the timings."""
        self.inference_count += rows
        self.queue.add(queue_ns)
        self.queue_hist.observe(queue_ns)
        self.compute_input.add(input_ns)
        self.compute_infer.add(infer_ns)
        self.compute_output.add(output_ns)

    def record_execution(
        self, batch_size: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """One model execution of ``batch_size`` rows."""
        self.execution_count += 1
        self.compute_hist.observe(input_ns + infer_ns + output_ns)
        self.batch_hist.observe(batch_size)
        row = self.batches.get(batch_size)
        if row is None:
            row = self.batches[batch_size] = BatchRow()
        row.compute_input.add(input_ns)
        row.compute_infer.add(infer_ns)
        row.compute_output.add(output_ns)

    def record_success(self, total_ns: int) -> None:
        """A request answered successfully, ``total_ns`` after it arrived."""
        self.success.add(total_ns)
        self.request_hist.observe(total_ns)
        self.last_inference_ms = time.time_ns() // 1_000_000

    def record_failure(self, total_ns: int, reason: str = "OTHER") -> None:
        """A request that reached this model failed, for one of ``FAILURE_REASONS``."""
        self.fail.add(total_ns)
        self.fail_reasons[reason] += 1
        self.request_hist.observe(total_ns)
        self.last_inference_ms = time.time_ns() // 1_000_000


class ServerStats:
    """Server-wide counters: refusals before a model is reached, and model lifecycle events."""

    def __init__(self) -> None:
        #: Requests refused by the server itself, by reason (``inflight_cap``, ``draining``).
        self.rejected: dict[str, int] = {}
        #: Model loads by result (``success``, ``failure``).
        self.loads = {"success": 0, "failure": 0}
        self.unloads = 0
        #: Models evicted to make room for others.
        self.evictions = 0
        #: Loads triggered by a request for an evicted model, and the time requests waited.
        self.on_demand_loads = 0
        self.on_demand_wait_ns = 0
        #: Budgets by device, and a reader of the bytes held by device (set by the server).
        self.memory_budgets: dict[str, int] = {}
        self.memory_held: Callable[[], dict[str, int]] = dict
        #: Audit records by outcome (written, dropped, failed) when an audit log is on.
        self.audit_counts: dict[str, int] = {}

    def record_rejected(self, reason: str) -> None:
        """A request refused before it reached a model."""
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
