"""Tensor decoding refuses shapes the data cannot hold before allocating anything."""

from __future__ import annotations

import time

import pytest

from volley.errors import InvalidArgument
from volley.model import tensors


@pytest.mark.parametrize("shape", [[1_000_000_000], [3_000_000_000], [2**62], [2**31, 2**31]])
def test_huge_bytes_shapes_with_little_data_fail_fast(shape: list[int]) -> None:
    started = time.monotonic()
    with pytest.raises(InvalidArgument, match="need at least"):
        tensors.from_raw("BYTES", shape, b"", "TEXT")
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize("shape", [[2**62], [2**40, 2**40]])
def test_huge_fixed_shapes_fail_on_the_size_check(shape: list[int]) -> None:
    with pytest.raises(InvalidArgument, match="byte size mismatch"):
        tensors.from_raw("FP32", shape, b"\0" * 16, "X")


def test_huge_typed_shapes_fail_on_the_count() -> None:
    with pytest.raises(InvalidArgument, match="expected"):
        tensors.from_values("INT32", [2**62], [1, 2, 3], "X")
