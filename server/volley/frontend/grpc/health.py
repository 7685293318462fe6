"""``grpc.health.v1.Health``: SERVING exactly when the server is ready, as Triton answers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from volley.errors import NotFound, Unimplemented
from volley.frontend.grpc.boundary import guarded, to_status
from volley.frontend.grpc.restriction import Restrictions

#: Service names ``Check`` answers for: the server as a whole and the inference service.
KNOWN_SERVICES = frozenset({"", "inference.GRPCInferenceService"})


class HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """``Check`` reports the server's readiness; unknown service names are NOT_FOUND."""

    def __init__(self, ready: Callable[[], bool], restrictions: Restrictions | None = None) -> None:
        self._ready = ready
        #: Restricted API groups (checked by ``guarded``).
        self.restrictions = dict(restrictions or {})

    @guarded("health")
    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        if request.service not in KNOWN_SERVICES:
            raise NotFound(f"unknown service '{request.service}'")
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self._ready()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        """Not served: Triton answers ``Check`` only."""
        code, message = to_status(Unimplemented("Health.Watch is not supported; use Check"))
        await context.abort(code, message)
        yield health_pb2.HealthCheckResponse()  # unreachable: abort raises
