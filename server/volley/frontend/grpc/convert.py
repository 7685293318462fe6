"""Protobuf messages <-> the service's protocol-neutral values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from volley._proto.inference import grpc_service_pb2 as pb
from volley.errors import InvalidArgument
from volley.model import tensors
from volley.serving.types import (
    IndexEntry,
    InferenceRequest,
    InferenceResponse,
    InputTensor,
    ModelMetadata,
    ParamValue,
    RequestedOutput,
    ServerMetadata,
)
from volley.telemetry.stats import Duration, ModelStats

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


def request_from_pb(msg: pb.ModelInferRequest, arrival_ns: int) -> InferenceRequest:
    """A ``ModelInferRequest`` as the service's request; raw contents are not copied."""
    if type(msg) is not pb.ModelInferRequest:
        raise msg.problem()  # a Malformed message from the lenient deserializer
    # Slices ([:]) of repeated fields are several times cheaper than iterating them.
    specs = msg.inputs[:]
    raws: list[Any] | None = msg.raw_input_contents[:] if msg.raw_input_contents else None
    if raws is not None and len(raws) != len(specs):
        raws = _spread(raws, specs, msg.model_name)
    inputs: list[InputTensor] = []
    for index, tensor in enumerate(specs):
        if raws is not None and raws[index] is not None:
            if tensor.HasField("contents"):
                raise InvalidArgument(
                    f"contents field must not be specified when using raw_input_contents "
                    f"for '{tensor.name}' for model '{msg.model_name}'"
                )
            item = InputTensor(tensor.name, tensor.datatype, tensor.shape[:], raws[index])
        elif tensor.HasField("contents"):
            values = contents_values(tensor.datatype, tensor.contents, tensor.name)
            item = InputTensor(tensor.name, tensor.datatype, tensor.shape[:], None, values)
        else:
            item = InputTensor(tensor.name, tensor.datatype, tensor.shape[:])
        if tensor.parameters:
            item.parameters = params_from_pb(tensor.parameters)
        inputs.append(item)
    request = InferenceRequest(msg.model_name, msg.model_version, msg.id, inputs, arrival_ns)
    if msg.outputs:
        request.outputs = [
            RequestedOutput(o.name, params_from_pb(o.parameters) if o.parameters else None)
            for o in msg.outputs
        ]
    if msg.parameters:
        request.parameters = params_from_pb(msg.parameters, request=True)
    return request


def _spread(
    raws: list[Any], specs: list[pb.ModelInferRequest.InferInputTensor], model: str
) -> list[bytes | None]:
    """``raw_input_contents`` for a request whose inputs in shared memory carry no entry:
    one per input, None where the input names a region.

    As in Triton, typed ``contents`` beside ``raw_input_contents`` is reported first.
    """
    for tensor in specs:
        if tensor.HasField("contents"):
            raise InvalidArgument(
                f"contents field must not be specified when using raw_input_contents "
                f"for '{tensor.name}' for model '{model}'"
            )
    in_shm = ["shared_memory_region" in t.parameters for t in specs]
    if len(raws) != in_shm.count(False):
        raise InvalidArgument(
            f"model '{model}': raw_input_contents has {len(raws)} entries for "
            f"{len(specs)} inputs (one entry per input not in shared memory, in input order)"
        )
    given = iter(raws)
    return [None if shm else next(given) for shm in in_shm]


def contents_values(datatype: str, contents: pb.InferTensorContents, name: str) -> Any:
    """The typed values of ``contents``, checking that only the datatype's own field is set."""
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
    return getattr(contents, field)


def params_from_pb(params: Mapping[str, Any], *, request: bool = False) -> dict[str, ParamValue]:
    """``InferParameter`` (or ``ModelRepositoryParameter``) values as plain Python.

    In a request's own parameters ``uint64_param`` is accepted only for ``priority``.
    """
    out: dict[str, ParamValue] = {}
    for key, param in params.items():
        kind = param.WhichOneof("parameter_choice")
        if kind is None:
            continue
        if kind == "uint64_param" and request and key not in ("priority", "sequence_id"):
            raise InvalidArgument(
                f"parameter '{key}': uint64_param is only accepted for 'priority'; use int64_param"
            )
        out[key] = getattr(param, kind)
    return out


def response_to_pb(response: InferenceResponse) -> pb.ModelInferResponse:
    """The service's response as a ``ModelInferResponse`` with ``raw_output_contents``."""
    msg = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    add = msg.outputs.add
    raw: list[bytes] = []
    for name, datatype, array, shm in response.outputs:
        if shm is not None:  # written into the client's shared memory region
            out = add(name=name, datatype=datatype, shape=array.shape)
            for key, value in shm.items():
                _set_param(out.parameters[key], value)
            raw.append(b"")
            continue
        add(name=name, datatype=datatype, shape=array.shape)
        raw.append(tensors.to_raw(array, datatype))
    msg.raw_output_contents.extend(raw)
    return msg


def _set_param(param: pb.InferParameter, value: ParamValue) -> None:
    if isinstance(value, bool):
        param.bool_param = value
    elif isinstance(value, int):
        param.int64_param = value
    elif isinstance(value, float):
        param.double_param = value
    else:
        param.string_param = value


def server_metadata_to_pb(meta: ServerMetadata) -> pb.ServerMetadataResponse:
    """``ServerMetadataResponse``."""
    return pb.ServerMetadataResponse(
        name=meta.name, version=meta.version, extensions=list(meta.extensions)
    )


def model_metadata_to_pb(meta: ModelMetadata) -> pb.ModelMetadataResponse:
    """``ModelMetadataResponse``."""
    msg = pb.ModelMetadataResponse(name=meta.name, versions=meta.versions, platform=meta.platform)
    for t in meta.inputs:
        msg.inputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
    for t in meta.outputs:
        msg.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
    msg.labels.update(meta.labels)
    return msg


def _fill(msg: pb.StatisticDuration, duration: Duration) -> None:
    msg.count = duration.count
    msg.ns = duration.ns


def stats_to_pb(stats: ModelStats) -> pb.ModelStatistics:
    """One version's ``ModelStatistics`` message."""
    msg = pb.ModelStatistics(
        name=stats.name,
        version=str(stats.version),
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
    )
    s = msg.inference_stats
    _fill(s.success, stats.success)
    _fill(s.fail, stats.fail)
    _fill(s.queue, stats.queue)
    _fill(s.compute_input, stats.compute_input)
    _fill(s.compute_infer, stats.compute_infer)
    _fill(s.compute_output, stats.compute_output)
    _fill(s.cache_hit, stats.cache_hit)
    _fill(s.cache_miss, stats.cache_miss)
    for size in sorted(stats.batches):
        row = stats.batches[size]
        b = msg.batch_stats.add(batch_size=size)
        _fill(b.compute_input, row.compute_input)
        _fill(b.compute_infer, row.compute_infer)
        _fill(b.compute_output, row.compute_output)
    for (kind, device), size in sorted(stats.memory_bytes.items()):
        msg.memory_usage.add(type=kind, id=device, byte_size=size)
    return msg


def index_to_pb(rows: list[IndexEntry]) -> pb.RepositoryIndexResponse:
    """``RepositoryIndexResponse``."""
    msg = pb.RepositoryIndexResponse()
    for row in rows:
        msg.models.add(name=row.name, version=row.version, state=row.state, reason=row.reason)
    return msg
