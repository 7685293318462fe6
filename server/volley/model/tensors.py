"""Tensor bytes <-> numpy arrays for every v2 datatype (raw bytes and typed value lists)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from math import prod
from typing import Any

import numpy as np

from volley.errors import InvalidArgument
from volley.model import dtypes

_LEN = struct.Struct("<I")


def deserialize_bytes(raw: bytes | memoryview, count: int, name: str) -> np.ndarray:
    """Parse ``count`` elements framed with a 4-byte little-endian length into an object array."""
    view = memoryview(raw)
    size = len(view)
    if count * 4 > size:
        # checked before anything is allocated: each element needs at least its length prefix
        raise InvalidArgument(
            f"input '{name}': {count} BYTES elements need at least {count * 4} bytes "
            f"(a 4-byte length prefix each), got {size}"
        )
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > size:
            raise InvalidArgument(
                f"input '{name}': BYTES data ends after {i} of {count} elements "
                "(each element needs a 4-byte little-endian length prefix)"
            )
        (length,) = _LEN.unpack_from(view, pos)
        pos += 4
        if pos + length > size:
            raise InvalidArgument(
                f"input '{name}': BYTES element {i} declares {length} bytes but only "
                f"{size - pos} remain"
            )
        out[i] = bytes(view[pos : pos + length])
        pos += length
    if pos != size:
        raise InvalidArgument(
            f"input '{name}': {size - pos} unexpected trailing bytes after {count} BYTES elements"
        )
    return out


def serialize_bytes(array: np.ndarray) -> bytes:
    """Frame every element (``bytes`` or ``str``) with its 4-byte little-endian length."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        data = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(_LEN.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def from_raw(datatype: str, shape: Sequence[int], raw: bytes | memoryview, name: str) -> np.ndarray:
    """A read-only numpy view (no copy) of raw tensor bytes; BYTES is parsed into objects."""
    count = prod(shape)
    if datatype == "BYTES":
        return deserialize_bytes(raw, count, name).reshape(shape)
    itemsize = dtypes.ITEMSIZE[datatype]
    if len(raw) != count * itemsize:
        raise InvalidArgument(
            f"input byte size mismatch for input '{name}': expected {count * itemsize} bytes "
            f"for {datatype} shape {list(shape)}, got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtypes.NUMPY[datatype]).reshape(shape)


def from_values(
    datatype: str, shape: Sequence[int], values: Sequence[Any], name: str
) -> np.ndarray:
    """An array of ``shape`` from a flat list of typed values (BYTES: ``bytes`` or ``str``)."""
    count = prod(shape)
    if len(values) != count:
        raise InvalidArgument(
            f"input '{name}': expected {count} elements for shape {list(shape)}, got {len(values)}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = [v.encode() if isinstance(v, str) else v for v in values]
        return array.reshape(shape)
    target = dtypes.NUMPY[datatype]
    if target.kind in "iu" and target.itemsize < 4:
        wide = np.asarray(values, dtype=np.int64)
        return (wide & ((1 << (8 * target.itemsize)) - 1)).astype(target).reshape(shape)
    return np.asarray(values, dtype=target).reshape(shape)


def to_raw(array: np.ndarray, datatype: str) -> bytes:
    """Raw little-endian bytes of an output (BYTES framed with length prefixes)."""
    if datatype == "BYTES":
        return serialize_bytes(array)
    target = dtypes.NUMPY[datatype]
    if array.dtype != target:
        array = array.astype(target)
    return array.tobytes()
