"""Tensor bytes <-> numpy arrays for every v2 datatype (raw and typed forms)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from math import prod

import numpy as np

from volley import dtypes
from volley._proto.inference import grpc_service_pb2 as pb
from volley.errors import InvalidArgument

_LEN = struct.Struct("<I")

#: v2 datatype -> the one ``InferTensorContents`` field allowed to carry it.
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_ALL_FIELDS = tuple(sorted(set(CONTENTS_FIELD.values())))


def deserialize_bytes(raw: bytes | memoryview, count: int, name: str) -> np.ndarray:
    """Parse ``count`` elements framed with a 4-byte little-endian length into an object array."""
    out = np.empty(count, dtype=object)
    view = memoryview(raw)
    size = len(view)
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


def from_raw(datatype: str, shape: Sequence[int], raw: bytes, name: str) -> np.ndarray:
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


def from_contents(
    datatype: str, shape: Sequence[int], contents: pb.InferTensorContents, name: str
) -> np.ndarray:
    """Convert typed ``contents`` to an array, checking the field matches the datatype."""
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidArgument(
            f"input '{name}': {datatype} data can only be sent as raw_input_contents"
        )
    for other in _ALL_FIELDS:
        if other != field and len(getattr(contents, other)):
            raise InvalidArgument(
                f"unexpected explicit tensor data for input tensor '{name}' for datatype "
                f"{datatype}: got {other}, expected {field}"
            )
    values = getattr(contents, field)
    count = prod(shape)
    if len(values) != count:
        raise InvalidArgument(
            f"input '{name}': expected {count} elements in {field} for shape {list(shape)}, "
            f"got {len(values)}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
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
