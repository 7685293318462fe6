"""The server under test: connecting to it and learning the model's tensors from its metadata."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from volley._proto.inference import grpc_service_pb2 as pb
from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc

from .errors import PerfError

#: Channel options of every ``volley perf`` channel: no message size limits, no retries.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.enable_retries", 0),
)


@dataclass(frozen=True)
class TensorMeta:
    """One input or output as ``ModelMetadata`` reports it (``-1`` marks a dynamic dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelInfo:
    """What ``volley perf`` knows about the model under test."""

    name: str
    version: str
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    #: From ``ModelConfig``; ``None`` when the server does not implement that extension.
    max_batch_size: int | None

    @property
    def batching(self) -> bool:
        """True when request shapes carry a leading batch dimension the config declares."""
        return bool(self.max_batch_size)

    def sample_dims(self, tensor: TensorMeta) -> tuple[int, ...]:
        """The tensor's dimensions without the batch dimension (if the model batches)."""
        return tensor.shape[1:] if self.batching and tensor.shape else tensor.shape


async def open_channel(url: str, timeout_s: float) -> grpc.aio.Channel:
    """Open an insecure channel to ``url`` and wait at most ``timeout_s`` for it to connect."""
    channel = grpc.aio.insecure_channel(url, options=CHANNEL_OPTIONS)
    try:
        await asyncio.wait_for(channel.channel_ready(), timeout_s)
    except (asyncio.TimeoutError, grpc.aio.AioRpcError):
        await channel.close(None)
        raise PerfError(f"cannot reach a gRPC server at {url} within {timeout_s:g} s") from None
    return channel


async def describe_model(
    channel: grpc.aio.Channel,
    url: str,
    model: str,
    version: str,
    timeout_s: float,
    declared: Sequence[tuple[str, str, list[int]]] = (),
) -> ModelInfo:
    """Read the model's tensors from ``ModelMetadata`` and its batching from ``ModelConfig``.

    ``declared`` inputs (``--input``; dims without the batch dimension of a batching model)
    replace the metadata's inputs of the same name and add the others, for servers whose
    metadata lists none.
    """
    stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
    try:
        meta = await stub.ModelMetadata(
            pb.ModelMetadataRequest(name=model, version=version), timeout=timeout_s
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            raise PerfError(f"model '{model}' not found on {url}: {exc.details()}") from None
        raise PerfError(
            f"ModelMetadata for '{model}' on {url} failed: {exc.code().name}: {exc.details()}"
        ) from None
    if not meta.inputs and not declared:
        raise PerfError(
            f"model '{model}' on {url} reports no inputs; declare them with "
            "--input NAME:DATATYPE:d1,d2"
        )
    max_batch_size: int | None
    try:
        config = await stub.ModelConfig(
            pb.ModelConfigRequest(name=model, version=version), timeout=timeout_s
        )
        max_batch_size = config.config.max_batch_size
    except grpc.aio.AioRpcError:
        max_batch_size = None
    inputs = {t.name: _tensor(t) for t in meta.inputs}
    for name, datatype, dims in declared:
        shape = ((-1,) if max_batch_size else ()) + tuple(dims)
        inputs[name] = TensorMeta(name=name, datatype=datatype, shape=shape)
    return ModelInfo(
        name=model,
        version=version,
        inputs=tuple(inputs.values()),
        outputs=tuple(_tensor(t) for t in meta.outputs),
        max_batch_size=max_batch_size,
    )


def _tensor(msg: pb.ModelMetadataResponse.TensorMetadata) -> TensorMeta:
    return TensorMeta(name=msg.name, datatype=msg.datatype, shape=tuple(msg.shape))
