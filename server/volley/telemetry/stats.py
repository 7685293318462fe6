"""Per-model-version statistics, as the protocol's ``ModelStatistics`` RPC reports them.

The one recorder of what happened to requests: the service records each request's outcome,
the batcher each executed batch. Updated only from the event-loop thread, so plain integer
fields need no lock. Transports turn a ``ModelStats`` into their own message.
"""

from __future__ import annotations

import time


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

    def record_request(
        self, rows: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """One request executed (as part of a batch): its share of the timings."""
        self.inference_count += rows
        self.queue.add(queue_ns)
        self.compute_input.add(input_ns)
        self.compute_infer.add(infer_ns)
        self.compute_output.add(output_ns)

    def record_execution(
        self, batch_size: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """One model execution of ``batch_size`` rows."""
        self.execution_count += 1
        row = self.batches.get(batch_size)
        if row is None:
            row = self.batches[batch_size] = BatchRow()
        row.compute_input.add(input_ns)
        row.compute_infer.add(infer_ns)
        row.compute_output.add(output_ns)

    def record_success(self, total_ns: int) -> None:
        """A request answered successfully, ``total_ns`` after it arrived."""
        self.success.add(total_ns)
        self.last_inference_ms = time.time_ns() // 1_000_000

    def record_failure(self, total_ns: int) -> None:
        """A request that reached this model failed."""
        self.fail.add(total_ns)
        self.last_inference_ms = time.time_ns() // 1_000_000
