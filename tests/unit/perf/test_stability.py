"""volley perf: perf_analyzer's stability rule."""

from __future__ import annotations

from volley_perf.stability import is_stable


def test_needs_three_windows() -> None:
    assert not is_stable([100, 100], [5, 5], 10)
    assert is_stable([100, 100, 100], [5, 5, 5], 10)


def test_only_the_last_three_count() -> None:
    assert is_stable([10, 500, 100, 104, 98], [50, 1, 5, 5, 5], 10)
    assert not is_stable([100, 104, 98, 500], [5, 5, 5, 5], 10)


def test_throughput_bound_is_max_over_min() -> None:
    assert is_stable([100, 110, 105], [5, 5, 5], 10)
    assert not is_stable([100, 110.5, 105], [5, 5, 5], 10)
    assert is_stable([100, 120, 110], [5, 5, 5], 20)


def test_latency_must_agree_too() -> None:
    assert not is_stable([100, 100, 100], [5, 6, 5], 10)
    assert is_stable([100, 100, 100], [5, 5.5, 5], 10)


def test_zero_throughput_is_never_stable() -> None:
    assert not is_stable([0, 0, 0], [0, 0, 0], 10)
    assert not is_stable([100, 0, 100], [5, 5, 5], 10)
