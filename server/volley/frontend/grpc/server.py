"""Build the gRPC server: inference service, health and reflection on one port."""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from volley._proto.inference import grpc_service_pb2 as pb
from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc
from volley.errors import VolleyError
from volley.frontend.grpc.health import HealthServicer
from volley.frontend.grpc.servicer import InferenceServicer
from volley.frontend.grpc.transport import choose, create_server
from volley.serving.service import InferenceService

log = logging.getLogger("volley.frontend")

_MAX_MESSAGE = 2**31 - 1
_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


class GrpcFrontend:
    """The gRPC transport over one ``InferenceService``, on the native server or grpcio's."""

    def __init__(
        self, service: InferenceService, address: str, port: int, transport: str = "auto"
    ) -> None:
        self._service = service
        self._address = f"{address}:{port}"
        self._server: grpc.aio.Server | None = None
        try:
            self.transport, self.why = choose(transport)
        except ValueError as exc:
            raise VolleyError(str(exc)) from exc
        self.port = 0

    async def start(self) -> int:
        """Bind and start serving; returns the bound port."""
        log.info("gRPC transport: %s (%s)", self.transport.value, self.why)
        server = create_server(
            self.transport,
            [
                ("grpc.max_send_message_length", _MAX_MESSAGE),
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.so_reuseport", 0),
            ],
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(self._service), server)
        health_pb2_grpc.add_HealthServicer_to_server(
            HealthServicer(self._service.server_ready), server
        )
        reflection.enable_server_reflection(
            (
                _SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        try:
            self.port = server.add_insecure_port(self._address)
        except RuntimeError as exc:
            raise VolleyError(f"could not bind gRPC address {self._address}: {exc}") from exc
        if self.port == 0:
            raise VolleyError(f"could not bind gRPC address {self._address}")
        await server.start()
        self._server = server
        return self.port

    async def stop(self, grace: float) -> None:
        """Stop accepting calls and let in-flight ones finish within ``grace`` seconds."""
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
