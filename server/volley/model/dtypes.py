"""The v2 datatypes and their numpy, model-config and ONNX equivalents."""

from __future__ import annotations

from typing import Final

import numpy as np

from volley._proto.inference import model_config_pb2 as mc

#: v2 wire datatype string -> numpy dtype (little-endian). BYTES is an object array of ``bytes``.
#: BF16 has no numpy type: it travels as raw ``uint16`` bit patterns.
NUMPY: Final[dict[str, np.dtype]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BF16": np.dtype("<u2"),
    "BYTES": np.dtype(object),
}

#: Element size in bytes of each fixed-size datatype (BYTES is variable: 0 here).
ITEMSIZE: Final[dict[str, int]] = {k: (0 if k == "BYTES" else v.itemsize) for k, v in NUMPY.items()}

#: model_config.DataType enum value -> v2 datatype string.
FROM_CONFIG: Final[dict[int, str]] = {
    mc.TYPE_BOOL: "BOOL",
    mc.TYPE_UINT8: "UINT8",
    mc.TYPE_UINT16: "UINT16",
    mc.TYPE_UINT32: "UINT32",
    mc.TYPE_UINT64: "UINT64",
    mc.TYPE_INT8: "INT8",
    mc.TYPE_INT16: "INT16",
    mc.TYPE_INT32: "INT32",
    mc.TYPE_INT64: "INT64",
    mc.TYPE_FP16: "FP16",
    mc.TYPE_FP32: "FP32",
    mc.TYPE_FP64: "FP64",
    mc.TYPE_STRING: "BYTES",
    mc.TYPE_BF16: "BF16",
}

#: v2 datatype string -> model_config.DataType enum value.
TO_CONFIG: Final[dict[str, int]] = {v: k for k, v in FROM_CONFIG.items()}

#: ONNX Runtime type strings (``NodeArg.type``) -> v2 datatype string.
FROM_ORT: Final[dict[str, str]] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
    "tensor(bfloat16)": "BF16",
}
