"""JSON documents of the v2 REST protocol <-> the service's protocol-neutral values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from volley._proto.inference import model_config_pb2 as mc
from volley.errors import InvalidArgument
from volley.frontend.http.binary import BinaryReader
from volley.model import dtypes, tensors
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

#: numpy kinds a JSON ``data`` array may hold for each datatype (bool, signed, unsigned, float).
_KINDS: dict[str, str] = {
    "BOOL": "b",
    **dict.fromkeys(("UINT8", "UINT16", "UINT32", "UINT64"), "iu"),
    **dict.fromkeys(("INT8", "INT16", "INT32", "INT64"), "iu"),
    **dict.fromkeys(("FP16", "FP32", "FP64"), "iuf"),
}
_KIND_WORDS = {"b": "booleans", "iu": "integers", "iuf": "numbers"}
_INPUT_FIELDS = "'data', 'binary_data_size' in 'parameters', 'shared_memory_region' in 'parameters'"

#: Compact UTF-8 JSON. orjson: about 10x faster than the standard library on these documents
#: (a binary-tensor inference header, and far more on JSON tensor data); NaN is written null.
dumps = orjson.dumps


def loads(text: bytes | memoryview) -> Any:
    """Parse a JSON document; malformed or too deeply nested text is the client's error."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"failed to parse the request JSON buffer: {exc}") from exc


@dataclass(slots=True)
class ParsedInfer:
    """An inference request and how the client wants each output back."""

    request: InferenceRequest
    #: Outputs not named in the request come back binary (``binary_data_output``).
    binary_default: bool
    #: Per requested output: binary (``binary_data: true``) or JSON.
    binary_outputs: dict[str, bool] | None


def request_from_json(
    doc: Any, binary: BinaryReader, model: str, version: str, arrival_ns: int
) -> ParsedInfer:
    """An inference request body as the service's request; binary inputs are not copied."""
    if type(doc) is not dict:
        raise InvalidArgument("the inference request must be a JSON object")
    inputs_doc = doc.get("inputs")
    if type(inputs_doc) is not list:
        raise InvalidArgument("Unable to parse 'inputs': expected a list of input tensors")
    inputs = [_input(item, binary, model) for item in inputs_doc]
    binary.finish(model)
    request_id = doc.get("id", "")
    if type(request_id) is not str:
        raise InvalidArgument("Unable to parse 'id': expected a string")
    request = InferenceRequest(model, version, request_id, inputs, arrival_ns)
    binary_default = False
    params = doc.get("parameters")
    if params is not None:
        params = _params(params, "the request's 'parameters'")
        if "binary_data_output" in params:
            flag = params.pop("binary_data_output")
            if type(flag) is not bool:
                raise InvalidArgument("Unable to parse 'binary_data_output': expected a boolean")
            binary_default = flag
        request.parameters = params or None
    binary_outputs: dict[str, bool] | None = None
    outputs_doc = doc.get("outputs")
    if outputs_doc is not None:
        if type(outputs_doc) is not list:
            raise InvalidArgument("Unable to parse 'outputs': expected a list")
        chosen: dict[str, bool] = {}
        request.outputs = [_output(item, chosen) for item in outputs_doc]
        binary_outputs = chosen
    return ParsedInfer(request, binary_default, binary_outputs)


def _input(item: Any, binary: BinaryReader, model: str) -> InputTensor:
    if type(item) is not dict:
        raise InvalidArgument("Unable to parse 'inputs': each input must be a JSON object")
    name = item.get("name")
    if type(name) is not str:
        raise InvalidArgument("Unable to parse 'name' of an input: expected a string")
    datatype = item.get("datatype")
    if type(datatype) is not str:
        raise InvalidArgument(f"input '{name}': unable to parse 'datatype': expected a string")
    shape = item.get("shape")
    if type(shape) is not list or any(type(d) is not int for d in shape):
        raise InvalidArgument(f"input '{name}': unable to parse 'shape': expected integers")
    tensor = InputTensor(name, datatype, shape)
    size: int | None = None
    shm = False
    params = item.get("parameters")
    if params is not None:
        params = _params(params, f"input '{name}' 'parameters'")
        if "binary_data_size" in params:
            value = params.pop("binary_data_size")
            if type(value) is int and value >= 0:
                size = value
            else:
                raise InvalidArgument(
                    f"input '{name}': unable to parse 'binary_data_size': expected a "
                    "non-negative integer"
                )
        shm = "shared_memory_region" in params
        tensor.parameters = params or None
    has_data = "data" in item
    given = has_data + (size is not None) + shm
    if given != 1:
        named = [
            n
            for n, there in (
                ("'data'", has_data),
                ("'binary_data_size'", size is not None),
                ("'shared_memory_region'", shm),
            )
            if there
        ]
        raise InvalidArgument(
            f"input '{name}' must set only one of the following fields: {_INPUT_FIELDS}. "
            f"But {'no field is set' if not named else 'set ' + ' '.join(named)}"
        )
    if size is not None:
        tensor.raw = binary.take(size, name, model)
    elif has_data:
        tensor.values = json_values(datatype, item["data"], name)
    return tensor


def _params(value: Any, where: str) -> dict[str, ParamValue]:
    if type(value) is not dict:
        raise InvalidArgument(f"Unable to parse {where}: expected a JSON object")
    for key, item in value.items():
        if type(item) not in (bool, int, str, float):
            raise InvalidArgument(
                f"parameter '{key}' has invalid type. It should be either 'int', 'bool', "
                "'float' or 'string'."
            )
    return dict(value)


def _output(item: Any, binary_outputs: dict[str, bool]) -> RequestedOutput:
    if type(item) is not dict:
        raise InvalidArgument("Unable to parse 'outputs': each output must be a JSON object")
    name = item.get("name")
    if type(name) is not str:
        raise InvalidArgument("Unable to parse 'name' of an output: expected a string")
    wanted = False
    params = item.get("parameters")
    if params is not None:
        params = _params(params, f"output '{name}' 'parameters'")
        if "binary_data" in params:
            flag = params.pop("binary_data")
            if type(flag) is not bool:
                raise InvalidArgument(f"output '{name}': unable to parse 'binary_data'")
            wanted = flag
    binary_outputs[name] = wanted
    return RequestedOutput(name, params or None)


def json_values(datatype: str, data: Any, name: str) -> Any:
    """A JSON ``data`` array (flat or nested) as a flat array or list of the datatype's values."""
    if type(data) is not list:
        raise InvalidArgument(f"input '{name}': unable to parse 'data': expected an array")
    if datatype == "BYTES":
        return _strings(data, name)
    kinds = _KINDS.get(datatype)
    if kinds is None:
        if datatype == "BF16":
            raise InvalidArgument(
                f"input '{name}': BF16 data must be sent as binary data ('binary_data_size')"
            )
        return data  # an unknown datatype: the codec names it against the model
    try:
        array = np.asarray(data)
    except ValueError as exc:
        raise InvalidArgument(
            f"input '{name}': 'data' must be an array of {_KIND_WORDS[kinds]}, nested "
            "regularly if nested"
        ) from exc
    if array.size == 0:
        return np.empty(0, dtypes.NUMPY[datatype])
    if array.dtype.kind not in kinds:
        raise InvalidArgument(
            f"input '{name}': {datatype} 'data' must hold {_KIND_WORDS[kinds]}, got "
            f"{_first_leaf(data)!r}"
        )
    return array.reshape(-1)


def _first_leaf(data: Any) -> Any:
    while type(data) is list and data:
        data = data[0]
    return data


def _strings(data: list[Any], name: str) -> list[str]:
    if all(type(v) is str for v in data):
        return data
    out: list[str] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if type(item) is list:
                stack.append(iter(item))
                break
            if type(item) is not str:
                raise InvalidArgument(
                    f"input '{name}': BYTES 'data' must hold strings, got {item!r}"
                )
            out.append(item)
        else:
            stack.pop()
    return out


# -- responses --------------------------------------------------------------------------------
def response_to_json(
    response: InferenceResponse, binary_default: bool, binary_outputs: dict[str, bool] | None
) -> tuple[bytes, list[bytes]]:
    """The JSON header of an inference response and its binary outputs, in output order."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, datatype, array, shm in response.outputs:
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if shm is not None:  # written into the client's shared memory region
            entry["parameters"] = dict(shm)
            outputs.append(entry)
            continue
        wanted = binary_default if binary_outputs is None else binary_outputs.get(name, False)
        if wanted:
            raw = tensors.to_raw(array, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            if raw:
                blobs.append(raw)
        else:
            entry["data"] = _json_data(array, datatype, name)
        outputs.append(entry)
    doc: dict[str, Any] = {}
    if response.id:
        doc["id"] = response.id
    doc["model_name"] = response.model_name
    doc["model_version"] = response.model_version
    doc["outputs"] = outputs
    return dumps(doc), blobs


def _json_data(array: np.ndarray, datatype: str, name: str) -> list[Any]:
    flat = array.reshape(-1)
    if datatype == "BYTES":
        try:
            return [v.decode() if isinstance(v, bytes) else str(v) for v in flat]
        except UnicodeDecodeError as exc:
            raise InvalidArgument(
                f"output '{name}' holds bytes that are not UTF-8 text; ask for it as binary "
                "data ('binary_data': true)"
            ) from exc
    if datatype == "BF16":
        raise InvalidArgument(
            f"output '{name}' is BF16, which JSON cannot carry; ask for it as binary data "
            "('binary_data': true)"
        )
    values: list[Any] = flat.tolist()
    return values


# -- metadata, statistics, repository -----------------------------------------------------------
def server_metadata_to_json(meta: ServerMetadata) -> dict[str, Any]:
    """``GET /v2``."""
    return {"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)}


def model_metadata_to_json(meta: ModelMetadata) -> dict[str, Any]:
    """``GET /v2/models/{m}[/versions/{v}]`` (``labels`` only when the model has some)."""
    doc: dict[str, Any] = {
        "name": meta.name,
        "versions": meta.versions,
        "platform": meta.platform,
        "inputs": [{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in meta.inputs],
        "outputs": [
            {"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in meta.outputs
        ],
    }
    if meta.labels:
        doc["labels"] = dict(meta.labels)
    return doc


def _duration(d: Duration) -> dict[str, int]:
    return {"count": d.count, "ns": d.ns}


def stats_to_json(stats: ModelStats) -> dict[str, Any]:
    """One version's statistics, with Triton's keys."""
    return {
        "name": stats.name,
        "version": str(stats.version),
        "last_inference": stats.last_inference_ms,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": {
            "success": _duration(stats.success),
            "fail": _duration(stats.fail),
            "queue": _duration(stats.queue),
            "compute_input": _duration(stats.compute_input),
            "compute_infer": _duration(stats.compute_infer),
            "compute_output": _duration(stats.compute_output),
            "cache_hit": _duration(stats.cache_hit),
            "cache_miss": _duration(stats.cache_miss),
        },
        "response_stats": {},
        "batch_stats": [
            {
                "batch_size": size,
                "compute_input": _duration(row.compute_input),
                "compute_infer": _duration(row.compute_infer),
                "compute_output": _duration(row.compute_output),
            }
            for size, row in sorted(stats.batches.items())
        ],
        "memory_usage": [
            {"type": kind, "id": device, "byte_size": size}
            for (kind, device), size in sorted(stats.memory_bytes.items())
        ],
    }


def index_to_json(rows: list[IndexEntry]) -> list[dict[str, str]]:
    """``POST /v2/repository/index``: name only for models never loaded, as Triton."""
    out: list[dict[str, str]] = []
    for row in rows:
        entry = {"name": row.name}
        if row.version:
            entry["version"] = row.version
        if row.state:
            entry["state"] = row.state
        if row.reason:
            entry["reason"] = row.reason
        out.append(entry)
    return out


_INT64 = frozenset(
    (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    )
)


def config_to_json(config: mc.ModelConfig) -> dict[str, Any]:
    """A model configuration as Triton serves it over REST: proto field names, every scalar
    field printed, 64-bit integers as JSON numbers (not protobuf's strings)."""
    doc: dict[str, Any] = json_format.MessageToDict(
        config, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    _numbers(config.DESCRIPTOR, doc)
    return doc


def _numbers(descriptor: Descriptor, doc: dict[str, Any]) -> None:
    for name, value in doc.items():
        field = descriptor.fields_by_name.get(name)
        if field is None:
            continue
        message = field.message_type
        if message is not None and message.GetOptions().map_entry:
            value_field = message.fields_by_name["value"]
            for key, item in value.items():
                value[key] = _number(value_field, item)
        elif field.is_repeated:
            value[:] = [_number(field, item) for item in value]
        else:
            doc[name] = _number(field, value)


def _number(field: FieldDescriptor, value: Any) -> Any:
    if field.message_type is not None:
        _numbers(field.message_type, value)
        return value
    if field.type in _INT64:
        return int(value)
    return value
