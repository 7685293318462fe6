"""Broker messages <-> service requests and responses: v2 JSON, or a serialized
``ModelInferRequest`` (content type ``application/x-protobuf``)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from volley._proto.inference import grpc_service_pb2 as pb
from volley.errors import InvalidArgument
from volley.serving.types import InferenceRequest, InferenceResponse, InputTensor, RequestedOutput

PROTOBUF = "application/x-protobuf"


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list) and data and isinstance(data[0], list):
        return [x for row in data for x in _flatten(row)]
    return list(data) if isinstance(data, list) else [data]


def request_from_message(
    body: bytes, content_type: str, model: str, message_id: str, arrival_ns: int
) -> InferenceRequest:
    """A service request from one message; InvalidArgument names what is wrong."""
    if content_type == PROTOBUF:
        try:
            msg = pb.ModelInferRequest.FromString(body)
        except Exception as exc:
            raise InvalidArgument(f"message {message_id}: not a ModelInferRequest ({exc})") from exc
        raws = list(msg.raw_input_contents)
        inputs = [
            InputTensor(t.name, t.datatype, list(t.shape), raws[i] if i < len(raws) else None)
            for i, t in enumerate(msg.inputs)
        ]
        return InferenceRequest(model, msg.model_version, msg.id or message_id, inputs, arrival_ns)
    try:
        doc = json.loads(body)
        inputs = [
            InputTensor(
                str(t["name"]), str(t["datatype"]), [int(d) for d in t["shape"]],
                values=_flatten(t["data"]),
            )
            for t in doc["inputs"]
        ]  # fmt: skip
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(
            f"message {message_id}: not a v2 JSON inference request ({exc!r}); expected "
            '{"inputs": [{"name", "datatype", "shape", "data"}]}'
        ) from exc
    request = InferenceRequest(
        model,
        str(doc.get("model_version", "")),
        str(doc.get("id") or message_id),
        inputs,
        arrival_ns,
    )
    if doc.get("outputs"):
        request.outputs = [RequestedOutput(str(o["name"])) for o in doc["outputs"]]
    return request


def response_message(response: InferenceResponse) -> bytes:
    """The v2 JSON of a response."""
    outputs = []
    for name, datatype, array, _shm in response.outputs:
        flat = array.reshape(-1)
        data = (
            [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
            if flat.dtype == object
            else np.asarray(flat).tolist()
        )
        outputs.append(
            {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}
        )
    return json.dumps(
        {
            "id": response.id,
            "model_name": response.model_name,
            "model_version": response.model_version,
            "outputs": outputs,
        }
    ).encode()


def error_message(message_id: str, model: str, error: str) -> bytes:
    """The JSON published for a message that could not be answered."""
    return json.dumps({"id": message_id, "model_name": model, "error": error}).encode()
