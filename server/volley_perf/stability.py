"""perf_analyzer's stability rule for measurement windows."""

from __future__ import annotations

from collections.abc import Sequence

#: Number of most recent windows that must agree.
STABILITY_WINDOW = 3


def is_stable(
    throughputs: Sequence[float],
    latencies: Sequence[float],
    percentage: float,
    window: int = STABILITY_WINDOW,
) -> bool:
    """True when the last ``window`` windows agree within ``percentage`` percent.

    As in perf_analyzer, the windows agree when, for the throughput and for the latency
    metric separately, the largest value is at most ``1 + percentage/100`` times the
    smallest, and no window had zero throughput.
    """
    if len(throughputs) < window or len(latencies) < window:
        return False
    return _agree(throughputs[-window:], percentage) and _agree(latencies[-window:], percentage)


def _agree(values: Sequence[float], percentage: float) -> bool:
    low, high = min(values), max(values)
    if low <= 0:
        return False
    return high / low <= 1 + percentage / 100
