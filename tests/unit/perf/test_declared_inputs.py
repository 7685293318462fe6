"""``--input NAME:DATATYPE:d1,d2`` parsing."""

from __future__ import annotations

import pytest
from volley_perf.errors import UsageError
from volley_perf.ranges import parse_inputs


def test_declarations() -> None:
    assert parse_inputs(["X:fp32:3,-1", "T:BYTES:1"]) == [
        ("X", "FP32", [3, -1]),
        ("T", "BYTES", [1]),
    ]


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("X:FP32", "expected NAME:DATATYPE"),
        ("X:FP9:3", "unknown datatype"),
        ("X:FP32:a", "integers"),
        ("X:FP32:-3", ">= -1"),
    ],
)
def test_bad_declarations(spec: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        parse_inputs([spec])


def test_twice() -> None:
    with pytest.raises(UsageError, match="declared twice"):
        parse_inputs(["X:FP32:1", "X:FP32:2"])
