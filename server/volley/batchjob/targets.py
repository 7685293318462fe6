"""Where a batch job's requests go: the model loaded in this process, or a running server.

In-process is what ``volley stream`` does: a registry, a model manager and an
``InferenceService``, so the requests meet the same codec, dynamic batcher and backend as a
server's. ``--url`` sends KServe v2 ``ModelInfer`` calls (raw tensor contents) over gRPC.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import grpc
import numpy as np

from volley._proto.inference import grpc_service_pb2 as pb
from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc
from volley.batchjob.errors import BatchError
from volley.batchjob.fields import ModelInfo
from volley.errors import VolleyError
from volley.model import tensors
from volley.serving.lifecycle import ModelManager
from volley.serving.registry import Registry
from volley.serving.service import InferenceService
from volley.serving.types import (
    InferenceRequest,
    InputTensor,
    RequestedOutput,
    TensorMetadata,
)

#: (input name, v2 datatype, array) of one request.
Inputs = Sequence[tuple[str, str, np.ndarray]]


class Target(Protocol):
    """A model that answers requests: ``infer`` raises ``BatchError`` with the server's reason."""

    info: ModelInfo

    async def infer(
        self, request_id: str, inputs: Inputs, outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """The named outputs of one request."""
        ...


def _raw(array: np.ndarray, datatype: str) -> bytes | memoryview:
    if datatype == "BYTES":
        return tensors.serialize_bytes(array)
    return np.ascontiguousarray(array).data.cast("B")


class InProcessTarget:
    """The model loaded here, called through ``InferenceService.infer``."""

    def __init__(self, service: InferenceService, info: ModelInfo) -> None:
        self.service = service
        self.info = info

    async def infer(
        self, request_id: str, inputs: Inputs, outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Run one request through the service (its codec, batcher and backend)."""
        request = InferenceRequest(
            self.info.name,
            "",
            request_id,
            [InputTensor(n, d, list(a.shape), raw=_raw(a, d)) for n, d, a in inputs],
            arrival_ns=time.monotonic_ns(),
            outputs=[RequestedOutput(n) for n in outputs],
        )
        try:
            response = await self.service.infer(request)
        except VolleyError as exc:
            raise BatchError(f"{exc.code.value}: {exc.message}") from exc
        return {o.name: o.array for o in response.outputs}


@asynccontextmanager
async def in_process(repository: Path, model: str) -> AsyncIterator[InProcessTarget]:
    """Load ``model`` from ``repository`` in this process; unload it on exit."""
    registry = Registry()
    manager = ModelManager([repository], registry)
    service = InferenceService(registry, manager, explicit_control=True)
    try:
        await manager.load(model)
        service.live = True
        meta = service.model_metadata(model, "")
        info = ModelInfo(
            meta.name,
            meta.versions,
            meta.inputs,
            meta.outputs,
            service.model_config(model, "").max_batch_size,
        )
        yield InProcessTarget(service, info)
    finally:
        service.live = False
        await manager.shutdown()


_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _output(response: pb.ModelInferResponse, i: int) -> np.ndarray:
    tensor = response.outputs[i]
    shape = [int(d) for d in tensor.shape]
    if i < len(response.raw_output_contents):
        return tensors.from_raw(
            tensor.datatype, shape, response.raw_output_contents[i], tensor.name
        )
    field = _CONTENTS.get(tensor.datatype)
    if field is None:
        raise BatchError(f"output '{tensor.name}' ({tensor.datatype}) came without its data")
    values = list(getattr(tensor.contents, field))
    return tensors.from_values(tensor.datatype, shape, values, tensor.name)


def _rpc_error(exc: grpc.aio.AioRpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"


class RemoteTarget:
    """A running server, called with ``ModelInfer`` over gRPC."""

    def __init__(self, stub: Any, info: ModelInfo, timeout_s: float) -> None:
        self.stub = stub
        self.info = info
        self.timeout_s = timeout_s

    async def infer(
        self, request_id: str, inputs: Inputs, outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Send one ``ModelInfer`` with raw input contents."""
        request = pb.ModelInferRequest(model_name=self.info.name, id=request_id)
        for name, datatype, array in inputs:
            request.inputs.add(name=name, datatype=datatype, shape=array.shape)
            request.raw_input_contents.append(bytes(_raw(array, datatype)))
        for name in outputs:
            request.outputs.add(name=name)
        try:
            response = await self.stub.ModelInfer(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise BatchError(_rpc_error(exc)) from exc
        try:
            return {t.name: _output(response, i) for i, t in enumerate(response.outputs)}
        except VolleyError as exc:
            raise BatchError(f"the server's answer cannot be read: {exc.message}") from exc


@asynccontextmanager
async def remote(url: str, model: str, timeout_s: float = 300.0) -> AsyncIterator[RemoteTarget]:
    """Connect to the server at ``url`` (HOST:PORT) and read ``model``'s metadata."""
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    async with grpc.aio.insecure_channel(url, options=options) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name=model), timeout=30)
        except grpc.aio.AioRpcError as exc:
            raise BatchError(f"model '{model}' at {url}: {_rpc_error(exc)}") from exc
        try:
            config = await stub.ModelConfig(pb.ModelConfigRequest(name=model), timeout=30)
            max_batch_size = int(config.config.max_batch_size)
        except grpc.aio.AioRpcError:
            max_batch_size = 0

        def tensor(t: Any) -> TensorMetadata:
            return TensorMetadata(t.name, t.datatype, [int(d) for d in t.shape])

        info = ModelInfo(
            meta.name or model,
            list(meta.versions),
            [tensor(t) for t in meta.inputs],
            [tensor(t) for t in meta.outputs],
            max_batch_size,
        )
        yield RemoteTarget(stub, info, timeout_s)
