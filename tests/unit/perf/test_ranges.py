"""volley perf: range and --shape parsing."""

from __future__ import annotations

import pytest
from volley_perf.errors import UsageError
from volley_perf.ranges import parse_concurrency_range, parse_rate_range, parse_shapes


@pytest.mark.parametrize(
    ("text", "levels"),
    [
        ("4", [4]),
        ("1:4", [1, 2, 3, 4]),
        ("1:64:16", [1, 17, 33, 49]),
        ("2:10:4", [2, 6, 10]),
        ("1:64:x2", [1, 2, 4, 8, 16, 32, 64]),
        ("1:100:x2", [1, 2, 4, 8, 16, 32, 64]),
        ("1:64:*4", [1, 4, 16, 64]),
        ("1,16,64", [1, 16, 64]),
        (" 3 : 3 ", [3]),
        ("1:10:x1.5", [1, 2, 3, 5, 7]),
    ],
)
def test_concurrency_range(text: str, levels: list[int]) -> None:
    assert parse_concurrency_range(text) == levels


def test_rate_range_accepts_floats() -> None:
    assert parse_rate_range("0.5:2:0.5") == [0.5, 1.0, 1.5, 2.0]
    assert parse_rate_range("100:400:x2") == [100.0, 200.0, 400.0]
    assert parse_rate_range("0.1:0.3:0.1") == pytest.approx([0.1, 0.2, 0.3])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("8:2", "below start"),
        ("0:4", "positive"),
        ("-1", "positive"),
        ("1:4:0", "step must be positive"),
        ("1:4:x1", "above 1"),
        ("a:b", "not an integer"),
        ("1.5", "not an integer"),
        ("1:2:3:4", "START[:END[:STEP]]"),
        ("1,0", "positive"),
        ("1:100000", "more than"),
    ],
)
def test_bad_concurrency_range(text: str, message: str) -> None:
    with pytest.raises(UsageError, match="--concurrency-range") as info:
        parse_concurrency_range(text)
    assert message in info.value.message
    assert "\n" not in info.value.message


def test_shapes() -> None:
    assert parse_shapes([]) == {}
    assert parse_shapes(["TEXT:4", "IMG:3,224,224"]) == {"TEXT": [4], "IMG": [3, 224, 224]}
    assert parse_shapes(["ns:x:2"]) == {"ns:x": [2]}


@pytest.mark.parametrize("spec", ["INPUT", "INPUT:", ":3", "INPUT:a", "INPUT:3,-1", "INPUT:3,,4"])
def test_bad_shapes(spec: str) -> None:
    with pytest.raises(UsageError, match="--shape"):
        parse_shapes([spec])
