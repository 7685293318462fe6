"""Per-model-version statistics, as the protocol's ``ModelStatistics`` RPC reports them.

The one recorder of what happened to requests: the service records each request's outcome,
the batcher each executed batch. Updated only from the event-loop thread, so plain integer
fields need no lock. Transports turn a ``ModelStats`` into their own message.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Callable

from volley.errors import DeadlineExceeded, Internal, ResourceExhausted, Unavailable

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


def failure_reason(exc: BaseException) -> str:
    """Triton's ``nv_inference_request_failure`` reason for an error."""
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELED"
    if isinstance(exc, Unavailable | DeadlineExceeded | ResourceExhausted):
        return "REJECTED"
    if isinstance(exc, Internal):
        return "BACKEND"
    return "OTHER"


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
        #: Response cache lookups that hit (answered without running) and missed, with the
        #: time the cache took (lookup, and insertion after a miss).
        self.cache_hit = Duration()
        self.cache_miss = Duration()

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


#: Bounds of the shadow comparison histogram: largest absolute output difference per request.
DIFF_BOUNDS: tuple[float, ...] = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)


class ShadowStats:
    """How a shadow version's answers compared with the primary's, for one version pair."""

    __slots__ = (
        "diff_counts",
        "diff_max",
        "diff_sum",
        "dropped",
        "failed",
        "mismatched",
        "model",
        "primary",
        "sent",
        "shadow",
        "top1_agree",
        "top1_rows",
    )

    def __init__(self, model: str, primary: int, shadow: int) -> None:
        self.model = model
        self.primary = primary
        self.shadow = shadow
        #: Copies sent, dropped (the shadow was behind), failed on the shadow, and compared
        #: with outputs whose shapes or types differ.
        self.sent = 0
        self.dropped = 0
        self.failed = 0
        self.mismatched = 0
        #: Per compared request, the largest absolute difference over its outputs.
        self.diff_counts = [0] * (len(DIFF_BOUNDS) + 1)
        self.diff_sum = 0.0
        self.diff_max = 0.0
        #: Rows of classifier outputs (last dimension > 1) and how many agree on the top class.
        self.top1_rows = 0
        self.top1_agree = 0

    @property
    def compared(self) -> int:
        """Requests whose answers were compared."""
        return sum(self.diff_counts)

    def record_diff(self, diff: float) -> None:
        """One compared request whose outputs differed by at most ``diff``."""
        self.diff_counts[bisect_left(DIFF_BOUNDS, diff)] += 1
        self.diff_sum += diff
        self.diff_max = max(self.diff_max, diff)

    def view(self) -> dict[str, float | int]:
        """The comparison as numbers."""
        compared = self.compared
        return {
            "primary": self.primary,
            "shadow": self.shadow,
            "sent": self.sent,
            "compared": compared,
            "dropped": self.dropped,
            "failed": self.failed,
            "mismatched": self.mismatched,
            "mean_max_abs_diff": self.diff_sum / compared if compared else 0.0,
            "max_abs_diff": self.diff_max,
            "top1_agreement": self.top1_agree / self.top1_rows if self.top1_rows else 1.0,
            "top1_rows": self.top1_rows,
        }


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
