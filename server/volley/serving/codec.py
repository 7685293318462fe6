"""``InferenceRequest`` -> validated scheduler ``InferRequest``; outputs -> ``InferenceResponse``.

Every check against the model spec (names, datatypes, shapes, sizes, parameters) happens here,
before anything is queued, whatever transport the request came on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from volley.backends import get_backend
from volley.backends.base import Backend
from volley.errors import InvalidArgument, Unimplemented
from volley.model import dtypes, tensors
from volley.model.spec import ModelSpec, TensorSpec
from volley.scheduler.request import InferRequest
from volley.serving.shm import SharedMemory
from volley.serving.types import (
    InferenceRequest,
    InferenceResponse,
    OutputTensor,
    ParamValue,
    RequestedOutput,
)

_RESERVED = frozenset(
    ("sequence_id", "sequence_start", "sequence_end", "headers", "binary_data_output")
)
_SHM_KEYS = ("shared_memory_region", "shared_memory_offset", "shared_memory_byte_size")


_BACKENDS: dict[str, Backend] = {}


def _backend(name: str) -> Backend:
    backend = _BACKENDS.get(name)
    if backend is None:
        backend = _BACKENDS[name] = get_backend(name)
    return backend


@dataclass(slots=True)
class Decoded:
    """A decoded request and what the client asked to get back."""

    request: InferRequest
    #: Output names to return, in request order; empty = every output of the model.
    outputs: list[str]
    #: Outputs to write into shared memory: name -> (region, offset, byte_size).
    shm_outputs: dict[str, tuple[str, int, int]] | None = None


def decode(req: InferenceRequest, spec: ModelSpec, shm: SharedMemory | None = None) -> Decoded:
    """Validate ``req`` against ``spec`` and decode its tensors without copying raw data.

    Inputs in shared memory (``shm``) are read as views of the region.
    """
    model = spec.name
    n_inputs = len(req.inputs)
    if n_inputs < spec.required_inputs or n_inputs > len(spec.inputs):
        expected = (
            str(len(spec.inputs))
            if spec.required_inputs == len(spec.inputs)
            else f"{spec.required_inputs} to {len(spec.inputs)}"
        )
        raise InvalidArgument(
            f"expected {expected} inputs but got {n_inputs} inputs for model '{model}'"
            + _missing(req, spec)
        )
    max_batch = spec.max_batch_size
    arrays: dict[str, np.ndarray] = {}
    batch = -1
    key: list[object] = []
    for tensor in req.inputs:
        name = tensor.name
        ts = spec.input_by_name.get(name)
        if ts is None:
            raise InvalidArgument(
                f"unexpected inference input '{name}' for model '{model}'; it has inputs "
                f"{[t.name for t in spec.inputs]}"
            )
        if name in arrays:
            raise InvalidArgument(f"input '{name}' appears more than once in the request")
        if tensor.datatype != ts.datatype:
            raise InvalidArgument(
                f"inference input '{name}' data-type is '{tensor.datatype}', but model "
                f"'{model}' expects '{ts.datatype}'"
            )
        shape = tensor.shape
        _check_shape(shape, ts, max_batch, model)
        if max_batch > 0:
            if batch == -1:
                batch = shape[0]
            elif shape[0] != batch:
                raise InvalidArgument(
                    f"input '{name}' batch size {shape[0]} does not match other inputs' "
                    f"batch size {batch} for model '{model}'"
                )
        raw = tensor.raw
        if tensor.parameters:
            window = _shm_window(tensor.parameters, f"input '{name}'", shm)
            if window is not None:
                if raw is not None or tensor.values is not None:
                    raise InvalidArgument(
                        f"input '{name}' names a shared memory region and also carries data"
                    )
                raw = shm.window(*window, f"input '{name}'")  # type: ignore[union-attr]
        if raw is not None:
            arrays[name] = tensors.from_raw(ts.datatype, shape, raw, name)
        elif tensor.values is not None:
            arrays[name] = tensors.from_values(ts.datatype, shape, tensor.values, name)
        else:
            raise InvalidArgument(f"unable to find data for input tensor '{name}' in the request")
        if ts.datatype == "BYTES" and spec.backend:  # an ensemble's steps check their own
            _backend(spec.backend).check_input(name, ts.datatype, arrays[name])
        key.append(name)
        key.extend(shape[1:] if max_batch > 0 else shape)
    priority, timeout_us = _request_parameters(req.parameters) if req.parameters else (0, 0)
    shm_outputs: dict[str, tuple[str, int, int]] | None = None
    if req.outputs:
        outputs = _requested_outputs(req.outputs, spec)
        for out in req.outputs:
            if out.parameters:
                window = _shm_window(out.parameters, f"output '{out.name}'", shm)
                if window is not None:
                    shm_outputs = shm_outputs or {}
                    shm_outputs[out.name] = window
    else:
        outputs = []
    request = InferRequest(
        inputs=arrays,
        rows=batch if max_batch > 0 else 1,
        shape_key=tuple(key),
        priority=priority,
        timeout_us=timeout_us,
        arrival_ns=req.arrival_ns,
    )
    if spec.sequence is not None:
        _sequence(request, req.parameters or {}, model)
    return Decoded(request=request, outputs=outputs, shm_outputs=shm_outputs)


def _sequence(request: InferRequest, parameters: dict[str, ParamValue], model: str) -> None:
    """A sequence model's request: its correlation id and start/end flags."""
    ident = parameters.get("sequence_id", 0)
    if type(ident) is str:
        if not ident:
            ident = 0
    elif type(ident) is not int or ident < 0:
        raise InvalidArgument("parameter 'sequence_id' must be an unsigned integer or a string")
    if ident == 0:
        raise InvalidArgument(
            f"inference request to model '{model}' must specify a non-zero or non-empty "
            "correlation ID"
        )
    for key in ("sequence_start", "sequence_end"):
        if type(parameters.get(key, False)) is not bool:
            raise InvalidArgument(f"parameter '{key}' must be a boolean")
    request.sequence_id = ident
    request.sequence_start = bool(parameters.get("sequence_start", False))
    request.sequence_end = bool(parameters.get("sequence_end", False))


def _missing(req: InferenceRequest, spec: ModelSpec) -> str:
    given = {t.name for t in req.inputs}
    missing = [t.name for t in spec.inputs if not t.optional and t.name not in given]
    return f"; missing {missing}" if missing else ""


def _check_shape(shape: list[int], ts: TensorSpec, max_batch: int, model: str) -> None:
    dims = ts.dims
    offset = 1 if max_batch > 0 else 0
    if len(shape) != len(dims) + offset:
        raise _shape_error(shape, ts, max_batch, model)
    if offset and not 1 <= shape[0] <= max_batch:
        if shape[0] < 0:
            raise _shape_error(shape, ts, max_batch, model)
        raise InvalidArgument(
            f"inference request batch-size must be <= {max_batch} for '{model}', "
            f"got {shape[0]} for input '{ts.name}'" + (" (and at least 1)" if shape[0] < 1 else "")
        )
    for i, want in enumerate(dims, offset):
        got = shape[i]
        if got < 0 or (want != got and want != -1):
            raise _shape_error(shape, ts, max_batch, model)


def _shape_error(shape: list[int], ts: TensorSpec, max_batch: int, model: str) -> InvalidArgument:
    if any(d < 0 for d in shape):
        return InvalidArgument(
            f"All input dimensions should be specified for input '{ts.name}' for model "
            f"'{model}', got {shape}"
        )
    expected = ts.full_shape(max_batch)
    return InvalidArgument(
        f"unexpected shape for input '{ts.name}' for model '{model}'. Expected "
        f"{expected}, got {shape}"
    )


def _shm_window(
    parameters: dict[str, ParamValue], what: str, shm: SharedMemory | None
) -> tuple[str, int, int] | None:
    """The (region, offset, byte_size) a tensor's parameters name, or None."""
    if not any(k in parameters for k in _SHM_KEYS):
        return None
    region = parameters.get("shared_memory_region")
    size = parameters.get("shared_memory_byte_size")
    offset = parameters.get("shared_memory_offset", 0)
    if type(region) is not str or not region:
        raise InvalidArgument(f"{what}: 'shared_memory_region' must be a region name")
    if type(size) is not int or size < 0:
        raise InvalidArgument(
            f"{what}: 'shared_memory_byte_size' must be a non-negative integer with the region"
        )
    if type(offset) is not int or offset < 0:
        raise InvalidArgument(f"{what}: 'shared_memory_offset' must be a non-negative integer")
    if shm is None:
        raise Unimplemented(f"{what}: shared memory is not available here")
    return region, offset, size


def _request_parameters(parameters: dict[str, ParamValue]) -> tuple[int, int]:
    priority = 0
    timeout_us = 0
    for key, value in parameters.items():
        if key == "priority":
            if type(value) is not int or value < 0:
                raise InvalidArgument("parameter 'priority' must be a non-negative integer")
            priority = value
        elif key == "timeout":
            if type(value) is not int or value < 0:
                raise InvalidArgument(
                    "parameter 'timeout' must be a non-negative integer (microseconds)"
                )
            timeout_us = value
        elif key in _RESERVED:
            if key.startswith("sequence_"):
                continue  # read by sequence models (``_sequence``); others ignore them
            raise InvalidArgument(f"parameter '{key}' is reserved and cannot be set by a request")
        elif key.startswith("triton_"):
            raise InvalidArgument(f"parameter '{key}' uses the reserved prefix 'triton_'")
    return priority, timeout_us


def _requested_outputs(requested: list[RequestedOutput], spec: ModelSpec) -> list[str]:
    names: list[str] = []
    for out in requested:
        if out.name in names:
            raise InvalidArgument(
                f"output '{out.name}' is requested more than once for model '{spec.name}'"
            )
        if out.name not in spec.output_by_name:
            raise InvalidArgument(
                f"unexpected inference output '{out.name}' for model '{spec.name}'; it has "
                f"outputs {[t.name for t in spec.outputs]}"
            )
        if out.parameters and "classification" in out.parameters:
            raise Unimplemented(
                f"output '{out.name}': the classification extension is not supported"
            )
        names.append(out.name)
    return names


def encode(
    spec: ModelSpec,
    version: str,
    request_id: str,
    outputs: dict[str, np.ndarray],
    requested: list[str],
    shm_outputs: dict[str, tuple[str, int, int]] | None = None,
    shm: SharedMemory | None = None,
) -> InferenceResponse:
    """The response: requested outputs in request order, else every output in config order.

    Outputs in ``shm_outputs`` are written into their shared memory regions; the response
    carries only their metadata and the region they were written to.
    """
    by_name = spec.output_by_name
    response = InferenceResponse(
        model_name=spec.name,
        model_version=version,
        id=request_id,
        outputs=[
            OutputTensor(name, by_name[name].datatype, outputs[name])
            for name in (requested or spec.output_names)
        ],
    )
    if shm_outputs:
        assert shm is not None
        response.outputs = [
            _to_shm(o, shm_outputs[o.name], shm) if o.name in shm_outputs else o
            for o in response.outputs
        ]
    return response


def _to_shm(output: OutputTensor, window: tuple[str, int, int], shm: SharedMemory) -> OutputTensor:
    region, offset, size = window
    what = f"output '{output.name}'"
    array, datatype = output.array, output.datatype
    data = tensors.to_raw(array, datatype) if datatype == "BYTES" else None
    target = dtypes.NUMPY.get(datatype, array.dtype)
    nbytes = len(data) if data is not None else array.size * np.dtype(target).itemsize
    if nbytes > size:
        raise InvalidArgument(
            f"{what}: shared memory byte_size {size} is too small for the {nbytes} bytes of "
            "the result"
        )
    window_view = shm.window(region, offset, nbytes, what)
    if data is not None:
        window_view[:] = data
    else:  # straight into the region: no intermediate bytes
        dest = np.frombuffer(window_view, dtype=target).reshape(array.shape)
        np.copyto(dest, array, casting="unsafe")
    return output._replace(
        shm={
            "shared_memory_region": region,
            "shared_memory_offset": offset,
            "shared_memory_byte_size": nbytes,
        }
    )
