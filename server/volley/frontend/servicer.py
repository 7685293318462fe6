"""``inference.GRPCInferenceService``: thin handlers over the registry and schedulers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from volley import __version__
from volley._proto.inference import grpc_service_pb2 as pb
from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc
from volley.errors import InvalidArgument, Unavailable, Unimplemented, VolleyError
from volley.frontend import codec
from volley.frontend.errors import abort, handled, to_status
from volley.repository.registry import ModelState, ModelVersion, Registry

if TYPE_CHECKING:
    from volley.app import VolleyServer

Ctx = grpc.aio.ServicerContext[Any, Any]

#: Protocol extensions this server implements (``ServerMetadataResponse.extensions``).
EXTENSIONS = (
    "model_repository",
    "schedule_policy",
    "model_configuration",
    "statistics",
)

_monotonic_ns = time.monotonic_ns


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Every RPC of the KServe v2 gRPC protocol as Triton serves it."""

    def __init__(self, server: VolleyServer) -> None:
        self._server = server
        self._registry: Registry = server.registry

    # -- health and metadata ------------------------------------------------------------------
    @handled
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Ctx
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._server.live)

    @handled
    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Ctx
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._server.ready())

    @handled
    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Ctx
    ) -> pb.ModelReadyResponse:
        mv = self._registry.lookup(request.name, request.version)
        return pb.ModelReadyResponse(ready=mv.ready)

    @handled
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Ctx
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name="volley", version=__version__, extensions=list(EXTENSIONS)
        )

    @handled
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Ctx
    ) -> pb.ModelMetadataResponse:
        mv = self._registry.resolve(request.name, request.version)
        spec = mv.spec
        if request.version:
            versions = [mv.version_str]
        else:
            entry = self._registry.get(request.name)
            assert entry is not None
            versions = [v.version_str for _, v in sorted(entry.versions.items()) if v.ready]
        response = pb.ModelMetadataResponse(
            name=spec.name, versions=versions, platform=spec.platform or spec.backend
        )
        for t in spec.inputs:
            response.inputs.add(
                name=t.name, datatype=t.datatype, shape=t.full_shape(spec.max_batch_size)
            )
        for t in spec.outputs:
            response.outputs.add(
                name=t.name, datatype=t.datatype, shape=t.full_shape(spec.max_batch_size)
            )
        return response

    @handled
    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: Ctx
    ) -> pb.ModelConfigResponse:
        mv = self._registry.resolve(request.name, request.version)
        response = pb.ModelConfigResponse()
        response.config.CopyFrom(mv.spec.config)
        return response

    # -- inference ----------------------------------------------------------------------------
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Ctx
    ) -> pb.ModelInferResponse:
        arrival = _monotonic_ns()
        mv: ModelVersion | None = None
        try:
            mv = self._registry.resolve(request.model_name, request.model_version)
            return await self._infer(mv, request, arrival)
        except BaseException as exc:
            if mv is not None:
                mv.stats.record_failure(_monotonic_ns() - arrival)
            if isinstance(exc, Exception):
                await abort(context, exc)
            raise

    async def _infer(
        self, mv: ModelVersion, request: pb.ModelInferRequest, arrival: int
    ) -> pb.ModelInferResponse:
        scheduler = mv.scheduler
        if scheduler is None:
            raise Unavailable(f"'{mv.name}' version {mv.version} is not at ready state")
        decoded = codec.decode(request, mv.spec, arrival)
        outputs = await scheduler.infer(decoded.request)
        response = codec.encode(mv.spec, mv.version_str, request.id, outputs, decoded.outputs)
        mv.stats.record_success(_monotonic_ns() - arrival)
        return response

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Ctx
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Each request runs concurrently; responses are written in arrival order."""
        order: asyncio.Queue[asyncio.Task[pb.ModelStreamInferResponse] | None] = asyncio.Queue()

        async def read() -> None:
            try:
                async for request in request_iterator:
                    await order.put(asyncio.ensure_future(self._stream_one(request)))
            finally:
                await order.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (task := await order.get()) is not None:
                yield await task
            await reader
        finally:
            reader.cancel()
            while not order.empty():
                leftover = order.get_nowait()
                if leftover is not None:
                    leftover.cancel()

    async def _stream_one(self, request: pb.ModelInferRequest) -> pb.ModelStreamInferResponse:
        arrival = _monotonic_ns()
        mv: ModelVersion | None = None
        try:
            mv = self._registry.resolve(request.model_name, request.model_version)
            response = await self._infer(mv, request, arrival)
            response.parameters["triton_final_response"].bool_param = True
            return pb.ModelStreamInferResponse(infer_response=response)
        except Exception as exc:
            if mv is not None:
                mv.stats.record_failure(_monotonic_ns() - arrival)
            _, message = to_status(exc)
            failed = pb.ModelStreamInferResponse(error_message=message)
            failed.infer_response.id = request.id
            failed.infer_response.model_name = request.model_name
            failed.infer_response.model_version = request.model_version
            return failed

    # -- statistics and repository ------------------------------------------------------------
    @handled
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Ctx
    ) -> pb.ModelStatisticsResponse:
        response = pb.ModelStatisticsResponse()
        if not request.name:
            for entry in self._registry.entries():
                for _, mv in sorted(entry.versions.items()):
                    if mv.ready:
                        response.model_stats.append(mv.stats.to_proto())
            return response
        named = self._registry.get(request.name)
        if named is None or named.default is None:
            raise InvalidArgument(f"requested model '{request.name}' is not available")
        if request.version:
            mv = self._registry.lookup(request.name, request.version)
            if not mv.ready:
                raise InvalidArgument(
                    f"requested model '{request.name}' version {request.version} is not available"
                )
            response.model_stats.append(mv.stats.to_proto())
        else:
            for _, mv in sorted(named.versions.items()):
                if mv.ready:
                    response.model_stats.append(mv.stats.to_proto())
        return response

    @handled
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Ctx
    ) -> pb.RepositoryIndexResponse:
        if request.repository_name:
            raise Unimplemented("'repository_name' specification is not supported")
        response = pb.RepositoryIndexResponse()
        for name in sorted(self._server.manager.model_dirs()):
            entry = self._registry.get(name)
            if entry is None or (not entry.versions and not entry.reason):
                if not request.ready:
                    response.models.add(name=name)
                continue
            if not entry.versions:
                if not request.ready:
                    response.models.add(
                        name=name, state=ModelState.UNAVAILABLE.value, reason=entry.reason
                    )
                continue
            for _, mv in sorted(entry.versions.items()):
                if request.ready and not mv.ready:
                    continue
                response.models.add(
                    name=name, version=mv.version_str, state=mv.state.value, reason=mv.reason
                )
        return response

    @handled
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Ctx
    ) -> pb.RepositoryModelLoadResponse:
        self._check_explicit(request.repository_name)
        if request.parameters:
            raise InvalidArgument(
                f"unrecognized load parameter(s) {sorted(request.parameters)}: this server "
                "loads models from the repository directory only"
            )
        try:
            await self._server.manager.load(request.model_name)
        except VolleyError as exc:
            raise InvalidArgument(
                f"load failed for model '{request.model_name}': {exc.message}"
            ) from exc
        return pb.RepositoryModelLoadResponse()

    @handled
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Ctx
    ) -> pb.RepositoryModelUnloadResponse:
        self._check_explicit(request.repository_name)
        await self._server.manager.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    def _check_explicit(self, repository_name: str) -> None:
        if repository_name:
            raise Unimplemented("'repository_name' specification is not supported")
        if not self._server.explicit_control:
            raise Unavailable("explicit model load / unload is not allowed if polling is enabled")

    # -- extensions this server does not implement ----------------------------------------------
    async def _unsupported(self, context: Ctx, feature: str) -> None:
        await abort(context, Unimplemented(f"{feature} is not supported by this server"))

    async def SystemSharedMemoryStatus(self, request: Any, context: Ctx) -> Any:
        await self._unsupported(context, "system shared memory")

    async def SystemSharedMemoryRegister(self, request: Any, context: Ctx) -> Any:
        await self._unsupported(context, "system shared memory")

    async def SystemSharedMemoryUnregister(self, request: Any, context: Ctx) -> Any:
        await self._unsupported(context, "system shared memory")

    async def CudaSharedMemoryStatus(self, request: Any, context: Ctx) -> Any:
        await self._unsupported(context, "CUDA shared memory")

    async def CudaSharedMemoryRegister(self, request: Any, context: Ctx) -> Any:
        await self._unsupported(context, "CUDA shared memory")

    async def CudaSharedMemoryUnregister(self, request: Any, context: Ctx) -> Any:
        await self._unsupported(context, "CUDA shared memory")

    async def TraceSetting(self, request: Any, context: Ctx) -> Any:
        await self._unsupported(context, "the trace extension")

    async def LogSettings(self, request: Any, context: Ctx) -> Any:
        await self._unsupported(context, "the logging extension")
