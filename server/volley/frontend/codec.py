"""``ModelInferRequest`` -> validated ``InferRequest``, and outputs -> ``ModelInferResponse``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from volley._proto.inference import grpc_service_pb2 as pb
from volley.errors import InvalidArgument, Unimplemented
from volley.frontend import tensors
from volley.repository.spec import ModelSpec, TensorSpec
from volley.scheduler.request import InferRequest

_RESERVED = frozenset(
    ("sequence_id", "sequence_start", "sequence_end", "headers", "binary_data_output")
)
_SHM_KEYS = ("shared_memory_region", "shared_memory_offset", "shared_memory_byte_size")


@dataclass(slots=True)
class Decoded:
    """A decoded request and what the client asked to get back."""

    request: InferRequest
    #: Output names to return, in request order; empty = every output of the model.
    outputs: list[str]


def decode(msg: pb.ModelInferRequest, spec: ModelSpec, arrival_ns: int) -> Decoded:
    """Validate ``msg`` against ``spec`` and decode its tensors without copying raw data."""
    model = spec.name
    raw_contents = msg.raw_input_contents
    n_inputs = len(msg.inputs)
    if n_inputs < spec.required_inputs or n_inputs > len(spec.inputs):
        expected = (
            str(len(spec.inputs))
            if spec.required_inputs == len(spec.inputs)
            else f"{spec.required_inputs} to {len(spec.inputs)}"
        )
        raise InvalidArgument(
            f"expected {expected} inputs but got {n_inputs} inputs for model '{model}'"
            + _missing(msg, spec)
        )
    if raw_contents and len(raw_contents) != n_inputs:
        raise InvalidArgument(
            f"model '{model}': raw_input_contents has {len(raw_contents)} entries for "
            f"{n_inputs} inputs (one entry per input, in input order)"
        )
    max_batch = spec.max_batch_size
    arrays: dict[str, np.ndarray] = {}
    batch = -1
    key: list[object] = []
    for index, tensor in enumerate(msg.inputs):
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
        shape = list(tensor.shape)
        _check_shape(shape, ts, max_batch, model)
        if max_batch > 0:
            if batch == -1:
                batch = shape[0]
            elif shape[0] != batch:
                raise InvalidArgument(
                    f"input '{name}' batch size {shape[0]} does not match other inputs' "
                    f"batch size {batch} for model '{model}'"
                )
        if tensor.parameters:
            _check_input_parameters(tensor, name)
        if raw_contents:
            if tensor.HasField("contents"):
                raise InvalidArgument(
                    f"contents field must not be specified when using raw_input_contents "
                    f"for '{name}' for model '{model}'"
                )
            arrays[name] = tensors.from_raw(ts.datatype, shape, raw_contents[index], name)
        elif tensor.HasField("contents"):
            arrays[name] = tensors.from_contents(ts.datatype, shape, tensor.contents, name)
        else:
            raise InvalidArgument(f"unable to find data for input tensor '{name}' in the request")
        key.append(name)
        key.extend(shape[1:] if max_batch > 0 else shape)
    if len(arrays) < spec.required_inputs:
        raise InvalidArgument(
            f"expected {spec.required_inputs} inputs but got {len(arrays)} for model '{model}'"
            + _missing(msg, spec)
        )
    priority, timeout_us = _request_parameters(msg) if msg.parameters else (0, 0)
    outputs = _requested_outputs(msg, spec) if msg.outputs else []
    request = InferRequest(
        inputs=arrays,
        rows=batch if max_batch > 0 else 1,
        shape_key=tuple(key),
        priority=priority,
        timeout_us=timeout_us,
        arrival_ns=arrival_ns,
    )
    return Decoded(request=request, outputs=outputs)


def _missing(msg: pb.ModelInferRequest, spec: ModelSpec) -> str:
    given = {t.name for t in msg.inputs}
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


def _check_input_parameters(tensor: pb.ModelInferRequest.InferInputTensor, name: str) -> None:
    if any(k in tensor.parameters for k in _SHM_KEYS):
        raise Unimplemented(
            f"input '{name}': shared memory is not supported by this server; send the data "
            "in raw_input_contents"
        )


def _request_parameters(msg: pb.ModelInferRequest) -> tuple[int, int]:
    priority = 0
    timeout_us = 0
    for key, param in msg.parameters.items():
        kind = param.WhichOneof("parameter_choice")
        if key == "priority":
            if kind == "int64_param" and param.int64_param >= 0:
                priority = param.int64_param
            elif kind == "uint64_param":
                priority = param.uint64_param
            else:
                raise InvalidArgument(
                    "parameter 'priority' must be a non-negative int64_param or a uint64_param"
                )
        elif key == "timeout":
            if kind != "int64_param" or param.int64_param < 0:
                raise InvalidArgument(
                    "parameter 'timeout' must be a non-negative int64_param (microseconds)"
                )
            timeout_us = param.int64_param
        elif key in _RESERVED:
            if key.startswith("sequence_"):
                raise Unimplemented(
                    f"parameter '{key}': sequence batching is not supported by this server"
                )
            raise InvalidArgument(f"parameter '{key}' is reserved and cannot be set by a request")
        elif key.startswith("triton_"):
            raise InvalidArgument(f"parameter '{key}' uses the reserved prefix 'triton_'")
        elif kind == "uint64_param":
            raise InvalidArgument(
                f"parameter '{key}': uint64_param is only accepted for 'priority'; use int64_param"
            )
    return priority, timeout_us


def _requested_outputs(msg: pb.ModelInferRequest, spec: ModelSpec) -> list[str]:
    names: list[str] = []
    for out in msg.outputs:
        if out.name not in spec.output_by_name:
            raise InvalidArgument(
                f"unexpected inference output '{out.name}' for model '{spec.name}'; it has "
                f"outputs {[t.name for t in spec.outputs]}"
            )
        if out.parameters:
            if "classification" in out.parameters:
                raise Unimplemented(
                    f"output '{out.name}': the classification extension is not supported"
                )
            if any(k in out.parameters for k in _SHM_KEYS):
                raise Unimplemented(
                    f"output '{out.name}': shared memory is not supported by this server"
                )
        names.append(out.name)
    return names


def encode(
    spec: ModelSpec,
    version: str,
    request_id: str,
    outputs: dict[str, np.ndarray],
    requested: list[str],
) -> pb.ModelInferResponse:
    """Build the response; outputs go to ``raw_output_contents`` in request/config order."""
    response = pb.ModelInferResponse(model_name=spec.name, model_version=version, id=request_id)
    names = requested or [t.name for t in spec.outputs]
    raw = response.raw_output_contents
    for name in names:
        array = outputs[name]
        datatype = spec.output_by_name[name].datatype
        response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        raw.append(tensors.to_raw(array, datatype))
    return response
