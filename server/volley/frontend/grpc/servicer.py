"""``inference.GRPCInferenceService``: converts messages and calls the ``InferenceService``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from volley._proto.inference import grpc_service_pb2 as pb
from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc
from volley.errors import InvalidArgument, NotFound, Unimplemented
from volley.frontend.grpc import convert, restriction
from volley.frontend.grpc.boundary import guarded, to_status
from volley.frontend.grpc.restriction import Restrictions
from volley.serving.service import InferenceService
from volley.serving.types import InferenceRequest

Ctx = grpc.aio.ServicerContext[Any, Any]

_monotonic_ns = time.monotonic_ns

_NO_CUDA_SHM = (
    "CUDA shared memory is not supported by this server; register system shared memory "
    "(SystemSharedMemoryRegister) instead"
)

#: Metadata keys that carry a caller's W3C trace context.
_TRACE_KEYS = frozenset(("traceparent", "tracestate"))


def _headers(context: Ctx, keys: frozenset[str]) -> dict[str, str]:
    """The call's metadata entries named in ``keys`` (text values only)."""
    return {
        key: value
        for key, value in context.invocation_metadata() or ()
        if key in keys and isinstance(value, str)
    }


def _no_repository_name(repository_name: str) -> None:
    if repository_name:
        raise Unimplemented("'repository_name' specification is not supported")


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Every RPC of the KServe v2 gRPC protocol as Triton serves it."""

    def __init__(self, service: InferenceService, restrictions: Restrictions | None = None) -> None:
        self._service = service
        #: Restricted API groups (checked by ``guarded``).
        self.restrictions = dict(restrictions or {})
        #: The transport's name on request spans.
        self.transport = "grpc"

    # -- health and metadata ------------------------------------------------------------------
    @guarded("health")
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Ctx
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._service.live)

    @guarded("health")
    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Ctx
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._service.server_ready())

    @guarded("health")
    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Ctx
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._service.model_ready(request.name, request.version))

    @guarded("metadata")
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Ctx
    ) -> pb.ServerMetadataResponse:
        return convert.server_metadata_to_pb(self._service.server_metadata())

    @guarded("metadata")
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Ctx
    ) -> pb.ModelMetadataResponse:
        meta = self._service.model_metadata(request.name, request.version)
        return convert.model_metadata_to_pb(meta)

    @guarded("model-config")
    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: Ctx
    ) -> pb.ModelConfigResponse:
        response = pb.ModelConfigResponse()
        response.config.CopyFrom(self._service.model_config(request.name, request.version))
        return response

    # -- inference ----------------------------------------------------------------------------
    @guarded("inference")
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Ctx
    ) -> pb.ModelInferResponse:
        req = convert.request_from_pb(request, _monotonic_ns())
        service = self._service
        if service.header_keys:
            req.headers = _headers(context, service.header_keys)
        if service.tracing.enabled:
            req.trace = service.tracing.start(
                _headers(context, _TRACE_KEYS),
                "ModelInfer",
                req.model_name,
                req.id,
                self.transport,
                req.arrival_ns,
            )
        return convert.response_to_pb(await service.infer(req))

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Ctx
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Each request runs concurrently; responses are written in arrival order."""
        if self.restrictions:
            try:
                restriction.check(self.restrictions, "inference", context)
            except Exception as exc:
                code, message = to_status(exc)
                await context.abort(code, message)
        tracing = self._service.tracing
        trace_headers = _headers(context, _TRACE_KEYS) if tracing.enabled else {}

        def to_request(msg: pb.ModelInferRequest) -> InferenceRequest:
            req = convert.request_from_pb(msg, _monotonic_ns())
            if tracing.enabled:
                req.trace = tracing.start(
                    trace_headers,
                    "ModelStreamInfer",
                    req.model_name,
                    req.id,
                    self.transport,
                    req.arrival_ns,
                )
            return req

        results = self._service.stream(request_iterator, to_request)
        async for result in results:
            if result.response is not None:
                response = convert.response_to_pb(result.response)
                response.parameters["triton_final_response"].bool_param = True
                yield pb.ModelStreamInferResponse(infer_response=response)
                continue
            assert result.error is not None
            code, message = to_status(result.error)
            failed = pb.ModelStreamInferResponse(error_message=message)
            failed.infer_response.parameters["triton_error_code"].string_param = code.name
            source = result.source
            failed.infer_response.id = source.id
            failed.infer_response.model_name = source.model_name
            failed.infer_response.model_version = source.model_version
            yield failed

    # -- statistics and repository ------------------------------------------------------------
    @guarded("statistics")
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Ctx
    ) -> pb.ModelStatisticsResponse:
        stats = self._service.statistics(request.name, request.version)
        return pb.ModelStatisticsResponse(model_stats=[convert.stats_to_pb(s) for s in stats])

    @guarded("model-repository")
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Ctx
    ) -> pb.RepositoryIndexResponse:
        _no_repository_name(request.repository_name)
        return convert.index_to_pb(self._service.repository_index(request.ready))

    @guarded("model-repository")
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Ctx
    ) -> pb.RepositoryModelLoadResponse:
        _no_repository_name(request.repository_name)
        params = convert.params_from_pb(request.parameters) if request.parameters else {}
        await self._service.load(request.model_name, params)
        return pb.RepositoryModelLoadResponse()

    @guarded("model-repository")
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Ctx
    ) -> pb.RepositoryModelUnloadResponse:
        _no_repository_name(request.repository_name)
        await self._service.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # -- shared memory ----------------------------------------------------------------------------
    @guarded("shared-memory")
    async def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest, context: Ctx
    ) -> pb.SystemSharedMemoryStatusResponse:
        response = pb.SystemSharedMemoryStatusResponse()
        for region in self._service.shm.status(request.name):
            row = response.regions[region.name]
            row.name, row.key = region.name, region.key
            row.offset, row.byte_size = region.offset, region.byte_size
        return response

    @guarded("shared-memory")
    async def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest, context: Ctx
    ) -> pb.SystemSharedMemoryRegisterResponse:
        self._service.shm.register(request.name, request.key, request.offset, request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    @guarded("shared-memory")
    async def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest, context: Ctx
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        self._service.shm.unregister(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    # No CUDA region can be registered: status lists none and unregistering is a no-op, so
    # clients that clean up before they start (as Triton's examples do) work unchanged.
    @guarded("shared-memory")
    async def CudaSharedMemoryStatus(
        self, request: pb.CudaSharedMemoryStatusRequest, context: Ctx
    ) -> pb.CudaSharedMemoryStatusResponse:
        if request.name:
            raise NotFound(f"Unable to find cuda shared memory region: '{request.name}'")
        return pb.CudaSharedMemoryStatusResponse()

    @guarded("shared-memory")
    async def CudaSharedMemoryRegister(self, request: Any, context: Ctx) -> Any:
        raise Unimplemented(_NO_CUDA_SHM)

    @guarded("shared-memory")
    async def CudaSharedMemoryUnregister(
        self, request: pb.CudaSharedMemoryUnregisterRequest, context: Ctx
    ) -> pb.CudaSharedMemoryUnregisterResponse:
        return pb.CudaSharedMemoryUnregisterResponse()

    # -- trace and log settings -----------------------------------------------------------------
    @guarded("trace")
    async def TraceSetting(
        self, request: pb.TraceSettingRequest, context: Ctx
    ) -> pb.TraceSettingResponse:
        changes = {key: list(value.value) for key, value in request.settings.items()}
        settings = self._service.trace_settings(request.model_name, changes)
        response = pb.TraceSettingResponse()
        for key, values in settings.items():
            response.settings[key].value.extend(values)
        return response

    @guarded("logging")
    async def LogSettings(
        self, request: pb.LogSettingsRequest, context: Ctx
    ) -> pb.LogSettingsResponse:
        changes: dict[str, bool | int | str] = {}
        for key, value in request.settings.items():
            choice = value.WhichOneof("parameter_choice")
            if choice is None:
                raise InvalidArgument(f"log setting '{key}' has no value")
            changes[key] = getattr(value, choice)
        response = pb.LogSettingsResponse()
        for key, setting in self._service.log_settings(changes).items():
            target = response.settings[key]
            if isinstance(setting, bool):
                target.bool_param = setting
            elif isinstance(setting, int):
                target.uint32_param = setting
            else:
                target.string_param = setting
        return response
