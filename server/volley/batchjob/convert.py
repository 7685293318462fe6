"""Column values (Arrow arrays, parsed JSON) -> the array a model input takes, or the row at fault.

Values are cast only where numpy's ``same_kind`` rule allows (ints into a float input, float64
into FP32), never floats into an integer input or text into a number: a wrong value is an
error naming its row, not a silent truncation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from volley.batchjob.fields import Field
from volley.model import dtypes


class RowError(Exception):
    """A value that does not fit its input: at ``row`` (within the values given), or the whole
    column when ``row`` is None."""

    def __init__(self, row: int | None, reason: str) -> None:
        super().__init__(reason)
        self.row = row
        self.reason = reason


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join("*" if d == -1 else str(d) for d in shape) + "]"


def fit(array: np.ndarray, field: Field) -> np.ndarray:
    """``array`` ([rows, ...]) reshaped and cast to what ``field``'s input takes.

    A plain column feeds an input whose rows are ``[1]`` and the other way round.
    """
    rows, shape = array.shape[0], array.shape[1:]
    want = field.row_shape
    if shape == () and want == (1,):
        array = array.reshape(rows, 1)
    elif shape == (1,) and want == ():
        array = array.reshape(rows)
    shape = array.shape[1:]
    if len(shape) != len(want) or any(w not in (-1, s) for w, s in zip(want, shape, strict=True)):
        raise RowError(
            0 if rows else None,
            f"column '{field.column}' has rows of shape {_shape_text(shape)} but input "
            f"'{field.input}' takes rows of shape {_shape_text(want)}",
        )
    return _cast(array, field)


def _per_row(array: np.ndarray) -> int:
    return int(np.prod(array.shape[1:], dtype=np.int64)) or 1


def _cast(array: np.ndarray, field: Field) -> np.ndarray:
    if field.datatype == "BYTES":
        if array.dtype.kind in "US":
            return array.astype(object)
        if array.dtype == object:
            for i, item in enumerate(array.reshape(-1)):
                if not isinstance(item, str | bytes):
                    raise RowError(i // _per_row(array), f"{item!r} is not a string")
            return array
        raise RowError(
            None,
            f"column '{field.column}' holds {array.dtype} values but input '{field.input}' "
            "is BYTES (strings)",
        )
    target = dtypes.NUMPY[field.datatype]
    if array.dtype == object or array.dtype.kind in "US":
        for i, item in enumerate(array.reshape(-1)):
            if item is None:
                raise RowError(i // _per_row(array), "missing value (null)")
            if isinstance(item, str | bytes) or not np.isscalar(item):
                raise RowError(i // _per_row(array), f"{item!r} is not a number")
        raise RowError(None, f"column '{field.column}' is not numeric")
    if not np.can_cast(array.dtype, target, "same_kind"):
        raise RowError(
            None,
            f"column '{field.column}' holds {array.dtype} values, which input "
            f"'{field.input}' ({field.datatype}) cannot take without changing them",
        )
    return array.astype(target, copy=False)


def from_values(values: Sequence[Any], field: Field) -> np.ndarray:
    """Parsed JSON values (one per row: a number, a string, nested lists) as ``field``'s array."""
    if not values:
        shape = (0, *(max(d, 0) for d in field.row_shape))
        return fit(np.empty(shape, dtype=dtypes.NUMPY[field.datatype]), field)
    try:
        array = np.asarray(values)
        if array.dtype == object and field.datatype != "BYTES":
            raise ValueError("mixed or ragged values")
        return fit(array, field)
    except (ValueError, TypeError, RowError) as exc:
        row, reason = _locate(values, field)
        if row is not None:
            raise RowError(row, reason) from exc
        if isinstance(exc, RowError):
            raise
        raise RowError(None, f"column '{field.column}': {exc}") from exc


def _locate(values: Sequence[Any], field: Field) -> tuple[int | None, str]:
    """The first row that does not fit alone, or does not have the shape of the rows before."""
    first: tuple[int, ...] | None = None
    for i, value in enumerate(values):
        leaf = _bad_leaf(value, field.datatype == "BYTES")
        if leaf is not None:
            what = "a string" if field.datatype == "BYTES" else "a number"
            return i, "missing value (null)" if leaf[0] is None else f"{leaf[0]!r} is not {what}"
        try:
            array = np.asarray(value)
            if array.dtype == object and field.datatype != "BYTES":
                raise ValueError("a ragged list, or one with null or mixed values")
            fitted = fit(array[None], field)
        except RowError as exc:
            return i, exc.reason
        except (ValueError, TypeError) as exc:
            return i, f"cannot be read as {field.datatype} values ({exc})"
        if first is None:
            first = fitted.shape[1:]
        elif fitted.shape[1:] != first:
            return i, (
                f"has shape {_shape_text(fitted.shape[1:])} where the rows before have "
                f"{_shape_text(first)} (the rows of a request must share a shape)"
            )
    return None, ""


def _bad_leaf(value: Any, strings: bool) -> tuple[Any] | None:
    """The first value inside nested lists that is not a number (``strings``: a string)."""
    if isinstance(value, list | tuple):
        for item in value:
            found = _bad_leaf(item, strings)
            if found is not None:
                return found
        return None
    ok = isinstance(value, str | bytes) if strings else isinstance(value, int | float)
    return None if ok else (value,)


def from_arrow(column: Any, field: Field) -> np.ndarray:
    """An Arrow array (a column of a record batch) as ``field``'s array."""
    return fit(_arrow_numpy(column, 1, field.row_shape), field)


def _arrow_numpy(arr: Any, per_row: int, want: tuple[int, ...]) -> np.ndarray:
    """``arr`` as numpy, lists unnested into dimensions; errors name the row (``per_row``:
    how many items of ``arr`` make one row)."""
    if arr.null_count:
        index = pc.index(pc.is_null(arr), True).as_py()
        raise RowError(index // per_row, "missing value (null)")
    kind = arr.type
    if pa.types.is_dictionary(kind):
        return _arrow_numpy(arr.dictionary_decode(), per_row, want)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        expected = want[0] if want and want[0] != -1 else (int(lengths[0]) if len(lengths) else 0)
        bad = np.flatnonzero(lengths != expected)
        if bad.size:
            i = int(bad[0])
            whose = "the input takes" if want and want[0] != -1 else "the rows before have"
            raise RowError(
                i // per_row,
                f"a list of {int(lengths[i])} values where {whose} {expected} "
                "(the rows of a request must share a shape)",
            )
        inner = _arrow_numpy(arr.flatten(), per_row * max(expected, 1), want[1:])
        return inner.reshape(len(arr), expected, *inner.shape[1:])
    array: np.ndarray = arr.to_numpy(zero_copy_only=False)
    return array
