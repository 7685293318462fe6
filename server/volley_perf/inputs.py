"""Request inputs from the model's metadata: random, zero or user data, serialized once."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from volley._proto.inference import grpc_service_pb2 as pb
from volley.model.dtypes import NUMPY
from volley.model.tensors import serialize_bytes

from .datafile import DataEntry, Sample, load_data
from .errors import PerfError
from .target import ModelInfo, TensorMeta

#: Random integers are drawn from ``[0, RANDOM_INT_HIGH)`` so they are valid as small ids.
RANDOM_INT_HIGH = 100
#: Random BYTES elements are lowercase ASCII strings of 1 to this many characters.
RANDOM_BYTES_MAX_LEN = 8


@dataclass(frozen=True)
class InputOptions:
    """How to fill the request inputs."""

    #: ``random``, ``zero`` or a path to a JSON file, a ``.npy`` file or a directory.
    data: str = "random"
    #: Seed of the random data.
    seed: int = 0
    #: Batch size of every request.
    batch_size: int = 1
    #: ``--shape`` values: input name -> dimensions (without the batch dimension).
    shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Tensor:
    """One request input, ready for ``raw_input_contents``."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes


@dataclass(frozen=True)
class PreparedInputs:
    """The distinct requests to cycle through, and notes about defaults that were applied."""

    requests: list[list[Tensor]]
    notes: list[str]


def check_batch_size(model: ModelInfo, batch_size: int) -> None:
    """Raise :class:`PerfError` if the model cannot take requests of ``batch_size``."""
    if batch_size < 1:
        raise PerfError(f"bad --batch-size {batch_size}: must be at least 1")
    if model.max_batch_size == 0 and batch_size > 1:
        raise PerfError(
            f"model '{model.name}' does not batch (max_batch_size 0): use --batch-size 1"
        )
    if model.max_batch_size and batch_size > model.max_batch_size:
        raise PerfError(
            f"bad --batch-size {batch_size}: model '{model.name}' "
            f"has max_batch_size {model.max_batch_size}"
        )


def prepare_inputs(model: ModelInfo, options: InputOptions) -> PreparedInputs:
    """Build the request tensors for ``model`` as ``options`` describe."""
    check_batch_size(model, options.batch_size)
    names = {t.name for t in model.inputs}
    for name in options.shapes:
        if name not in names:
            raise PerfError(
                f"bad --shape: model '{model.name}' has no input '{name}' "
                f"(inputs: {', '.join(t.name for t in model.inputs)})"
            )
    if options.data in ("random", "zero"):
        return _generated(model, options)
    entries = load_data(Path(options.data), model)
    return PreparedInputs(
        requests=[_from_entries(model, options, entries, r) for r in range(len(entries))],
        notes=[],
    )


def _generated(model: ModelInfo, options: InputOptions) -> PreparedInputs:
    rng = np.random.default_rng(options.seed)
    notes: list[str] = []
    tensors = []
    for tensor in model.inputs:
        shape = _full_shape(model, tensor, options, None, notes)
        count = math.prod(shape)
        zero = options.data == "zero"
        values = _zeros(tensor, count) if zero else _random(tensor, count, rng)
        tensors.append(Tensor(tensor.name, tensor.datatype, shape, encode(tensor.datatype, values)))
    return PreparedInputs(requests=[tensors], notes=notes)


def _from_entries(
    model: ModelInfo, options: InputOptions, entries: list[DataEntry], index: int
) -> list[Tensor]:
    """Request ``index`` stacks entries ``index, index+1, ...`` (cyclically) into one batch."""
    batch = options.batch_size if model.batching else 1
    tensors = []
    for tensor in model.inputs:
        samples = [entries[(index + j) % len(entries)][tensor.name] for j in range(batch)]
        first = samples[0]
        sample_shape = _sample_shape(model, tensor, options, first, [])
        for sample in samples:
            if sample.values.size != math.prod(sample_shape):
                raise PerfError(
                    f"--input-data: '{tensor.name}' has {sample.values.size} "
                    f"values, shape {list(sample_shape)} needs "
                    f"{math.prod(sample_shape)}"
                )
        values = np.concatenate([s.values for s in samples]) if batch > 1 else first.values
        shape = (batch, *sample_shape) if model.batching else sample_shape
        tensors.append(Tensor(tensor.name, tensor.datatype, shape, encode(tensor.datatype, values)))
    return tensors


def _full_shape(
    model: ModelInfo,
    tensor: TensorMeta,
    options: InputOptions,
    sample: Sample | None,
    notes: list[str],
) -> tuple[int, ...]:
    sample_shape = _sample_shape(model, tensor, options, sample, notes)
    return (options.batch_size, *sample_shape) if model.batching else sample_shape


def _sample_shape(
    model: ModelInfo,
    tensor: TensorMeta,
    options: InputOptions,
    sample: Sample | None,
    notes: list[str],
) -> tuple[int, ...]:
    """The shape of one batch element: ``--shape``, the data's own, or the metadata's."""
    dims = model.sample_dims(tensor)
    given = options.shapes.get(tensor.name)
    if given is None and sample is not None and sample.shape is not None:
        given = sample.shape
    if given is not None:
        shape = tuple(int(d) for d in given)
        if len(shape) != len(dims) or any(
            d != -1 and d != s for d, s in zip(dims, shape, strict=True)
        ):
            raise PerfError(
                f"shape {list(shape)} for input '{tensor.name}' does not match "
                f"the model's {list(dims)}"
            )
        return shape
    if -1 not in dims:
        return dims
    if sample is not None:
        return _infer_one_dim(tensor, dims, sample.values.size)
    filled = [
        options.batch_size
        if (d == -1 and i == 0 and model.max_batch_size is None)
        else (1 if d == -1 else d)
        for i, d in enumerate(dims)
    ]
    notes.append(
        f"input '{tensor.name}' has dynamic dimensions {list(dims)}: using "
        f"{filled} (set --shape {tensor.name}:d1,d2,...)"
    )
    return tuple(filled)


def _infer_one_dim(tensor: TensorMeta, dims: tuple[int, ...], size: int) -> tuple[int, ...]:
    fixed = math.prod(d for d in dims if d != -1)
    if dims.count(-1) != 1 or fixed == 0 or size % fixed:
        raise PerfError(
            f"--input-data: cannot tell the shape of '{tensor.name}' "
            f'(model dims {list(dims)}, {size} values): give a "shape" or --shape'
        )
    return tuple(size // fixed if d == -1 else d for d in dims)


def _zeros(tensor: TensorMeta, count: int) -> np.ndarray:
    if tensor.datatype == "BYTES":
        return np.array([b""] * count, dtype=object)
    return np.zeros(count, dtype=_dtype(tensor))


def _random(tensor: TensorMeta, count: int, rng: np.random.Generator) -> np.ndarray:
    datatype = tensor.datatype
    if datatype == "BYTES":
        lengths = rng.integers(1, RANDOM_BYTES_MAX_LEN + 1, count)
        letters = rng.integers(ord("a"), ord("z") + 1, int(lengths.sum()), dtype=np.uint8)
        text = letters.tobytes()
        ends = np.cumsum(lengths)
        return np.array([text[e - n : e] for n, e in zip(lengths, ends, strict=True)], dtype=object)
    if datatype == "BOOL":
        return rng.integers(0, 2, count).astype(np.bool_)
    if datatype in ("FP16", "FP32", "FP64"):
        return rng.random(count).astype(_dtype(tensor))
    if datatype == "BF16":
        as_f32 = rng.random(count).astype(np.float32)
        return (as_f32.view(np.uint32) >> 16).astype(np.uint16)
    return rng.integers(0, RANDOM_INT_HIGH, count).astype(_dtype(tensor))


def _dtype(tensor: TensorMeta) -> np.dtype:
    dtype = NUMPY.get(tensor.datatype)
    if dtype is None:
        raise PerfError(f"input '{tensor.name}' has unknown datatype '{tensor.datatype}'")
    return dtype


def encode(datatype: str, values: np.ndarray) -> bytes:
    """The raw wire bytes of flattened ``values`` (BYTES elements get a 4-byte length prefix)."""
    if datatype == "BYTES":
        return serialize_bytes(values)
    return np.ascontiguousarray(values, dtype=NUMPY[datatype]).tobytes()


def serialize_request(model: ModelInfo, tensors: Sequence[Tensor]) -> bytes:
    """One ``ModelInferRequest`` for ``tensors``, serialized (it is sent as these bytes)."""
    request = pb.ModelInferRequest(model_name=model.name, model_version=model.version)
    for tensor in tensors:
        request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        request.raw_input_contents.append(tensor.raw)
    return request.SerializeToString()
