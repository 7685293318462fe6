"""``--memory-budget`` parsing."""

from __future__ import annotations

import pytest

from volley.memory.budget import format_bytes, parse_budgets, parse_size


def test_sizes() -> None:
    assert parse_size("2GiB") == 2 * 1024**3
    assert parse_size("512MiB") == 512 * 1024**2
    assert parse_size("1.5GB") == 1_500_000_000
    assert parse_size("100") == 100
    with pytest.raises(ValueError, match="bad size"):
        parse_size("lots")
    with pytest.raises(ValueError, match="bad size"):
        parse_size("5 parsecs")


def test_budgets_repeatable_and_comma_separated() -> None:
    assert parse_budgets(["cpu=1GiB", "gpu0=2GiB,gpu1=3GiB"]) == {
        "cpu": 1024**3,
        "gpu0": 2 * 1024**3,
        "gpu1": 3 * 1024**3,
    }
    with pytest.raises(ValueError, match="expected DEVICE=SIZE"):
        parse_budgets(["tpu=1GiB"])
    with pytest.raises(ValueError, match="given twice"):
        parse_budgets(["cpu=1GiB", "cpu=2GiB"])


def test_format() -> None:
    assert format_bytes(41943040) == "40.0 MiB"
    assert format_bytes(12) == "12 B"
