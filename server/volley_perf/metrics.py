"""Measurements of a window or of merged windows: throughput, latency percentiles, CPU."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .server_stats import ServerCounters
from .worker import WorkerResult

#: The latency percentiles every report carries.
PERCENTILES = (50, 90, 95, 99)


def percentile(sorted_values: np.ndarray, p: float) -> float:
    """Nearest-rank percentile of ascending ``sorted_values`` (0 when empty).

    The value at 1-based rank ``ceil(p/100 * n)``: p50 of [1, 2, 3, 4] is 2, p99 of 100
    values is the 99th smallest, and p100 is the maximum.
    """
    n = len(sorted_values)
    if n == 0:
        return 0.0
    rank = int(np.ceil(p / 100 * n))
    return float(sorted_values[min(max(rank, 1), n) - 1])


@dataclass
class Measurement:
    """What was measured in one window, or in several windows merged."""

    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    delayed: int = 0
    invalid: int = 0
    #: Wall time of the window(s): first send to last response.
    elapsed_ns: int = 0
    #: Latencies of successful requests, nanoseconds, ascending.
    latencies_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: Per worker: CPU time of its process and wall time of its part of the window(s).
    cpu_ns: list[int] = field(default_factory=list)
    wall_ns: list[int] = field(default_factory=list)
    #: Server counters' change over the window(s); ``None`` without the statistics RPC.
    server: ServerCounters | None = None
    #: Status and details of one failed request, if any failed.
    first_error: str = ""

    @property
    def failed(self) -> int:
        """Requests answered with an error status."""
        return sum(self.errors.values())

    def requests_per_s(self) -> float:
        """Successful requests per second."""
        return self.ok / (self.elapsed_ns / 1e9) if self.elapsed_ns > 0 else 0.0

    def sends_per_s(self) -> float:
        """Requests sent per second."""
        return self.sent / (self.elapsed_ns / 1e9) if self.elapsed_ns > 0 else 0.0

    def latency_us(self, p: float) -> float:
        """The ``p``-th percentile latency in microseconds."""
        return percentile(self.latencies_ns, p) / 1e3

    def avg_latency_us(self) -> float:
        """Mean latency of successful requests in microseconds."""
        return float(self.latencies_ns.mean()) / 1e3 if len(self.latencies_ns) else 0.0

    def latency_summary_us(self) -> dict[str, float]:
        """p50/p90/p95/p99, mean, min and max latency in microseconds."""
        summary = {f"p{p}": self.latency_us(p) for p in PERCENTILES}
        summary["avg"] = self.avg_latency_us()
        summary["min"] = self.latency_us(0)
        summary["max"] = self.latency_us(100)
        return summary

    def client_busy(self) -> list[float]:
        """Per worker: the share of wall time its process spent on the CPU."""
        return [c / w if w > 0 else 0.0 for c, w in zip(self.cpu_ns, self.wall_ns, strict=True)]

    def client_cpu_us_per_request(self) -> float:
        """Client CPU time (all workers) per request sent, in microseconds."""
        return sum(self.cpu_ns) / self.sent / 1e3 if self.sent else 0.0


def from_results(results: Sequence[WorkerResult], server: ServerCounters | None) -> Measurement:
    """Combine the workers' results of one window."""
    errors: dict[str, int] = {}
    for r in results:
        for name, count in r.errors.items():
            errors[name] = errors.get(name, 0) + count
    latencies = np.concatenate(
        [np.frombuffer(r.latencies_ns, dtype=np.int64) for r in results]
        or [np.zeros(0, dtype=np.int64)]
    )
    latencies.sort()
    begin = min((r.begin_ns for r in results), default=0)
    end = max((r.end_ns for r in results), default=0)
    return Measurement(
        sent=sum(r.sent for r in results),
        ok=sum(r.ok for r in results),
        errors=errors,
        delayed=sum(r.delayed for r in results),
        invalid=sum(r.invalid for r in results),
        elapsed_ns=end - begin,
        latencies_ns=latencies,
        cpu_ns=[r.cpu_ns for r in results],
        wall_ns=[r.end_ns - r.begin_ns for r in results],
        server=server,
        first_error=next((r.first_error for r in results if r.first_error), ""),
    )


def merge(windows: Sequence[Measurement]) -> Measurement:
    """One measurement covering all of ``windows`` (as if they were one long window)."""
    errors: dict[str, int] = {}
    for w in windows:
        for name, count in w.errors.items():
            errors[name] = errors.get(name, 0) + count
    latencies = np.concatenate([w.latencies_ns for w in windows] or [np.zeros(0, np.int64)])
    latencies.sort()
    n_workers = max((len(w.cpu_ns) for w in windows), default=0)
    server: ServerCounters | None = None
    if windows and all(w.server is not None for w in windows):
        server = ServerCounters()
        for w in windows:
            assert w.server is not None
            server = server + w.server
    return Measurement(
        sent=sum(w.sent for w in windows),
        ok=sum(w.ok for w in windows),
        errors=errors,
        delayed=sum(w.delayed for w in windows),
        invalid=sum(w.invalid for w in windows),
        elapsed_ns=sum(w.elapsed_ns for w in windows),
        latencies_ns=latencies,
        cpu_ns=[sum(w.cpu_ns[i] for w in windows if i < len(w.cpu_ns)) for i in range(n_workers)],
        wall_ns=[
            sum(w.wall_ns[i] for w in windows if i < len(w.wall_ns)) for i in range(n_workers)
        ],
        server=server,
    )
