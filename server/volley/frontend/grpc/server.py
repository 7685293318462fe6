"""Build the gRPC server: inference service, health and reflection on one port."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from volley._proto.inference import grpc_service_pb2 as pb
from volley.errors import VolleyError
from volley.frontend.grpc.boundary import lenient
from volley.frontend.grpc.health import HealthServicer
from volley.frontend.grpc.servicer import InferenceServicer
from volley.frontend.grpc.transport import choose, create_server
from volley.serving.service import InferenceService

log = logging.getLogger("volley.frontend")

_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a TLS server; ``mutual`` requires client certificates signed by ``root``."""

    cert: Path
    key: Path
    root: Path | None = None
    mutual: bool = False

    def credentials(self) -> grpc.ServerCredentials:
        """The server credentials, reading the files now (errors name the file)."""
        try:
            key, cert = self.key.read_bytes(), self.cert.read_bytes()
            root = self.root.read_bytes() if self.root is not None else None
        except OSError as exc:
            raise VolleyError(f"cannot read a TLS file: {exc}") from exc
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=root, require_client_auth=self.mutual
        )


@dataclass(frozen=True)
class GrpcOptions:
    """Everything the gRPC frontend is configured with, validated by the settings."""

    address: str = "0.0.0.0"
    port: int = 8001
    #: ``auto``, ``native`` or ``grpcio``.
    transport: str = "auto"
    tls: TlsFiles | None = None
    #: API group -> (header, value) that its calls must carry.
    restrictions: dict[str, tuple[str, str]] = field(default_factory=dict)
    max_message_bytes: int = 64 * 1024 * 1024
    #: Further ``grpc.*`` channel arguments (keepalive, HTTP/2 ping policy, stream limits).
    channel_args: tuple[tuple[str, int], ...] = ()
    #: Connection limits only grpcio enforces: ``(flag, channel argument, value)``.
    grpcio_args: tuple[tuple[str, str, int], ...] = ()


def add_inference_service(servicer: InferenceServicer, server: grpc.aio.Server) -> None:
    """Register every RPC of ``GRPCInferenceService``, as the generated code does, but with
    deserializers that never fail: bytes that are not the method's message reach the
    servicer as ``Malformed`` and are answered INVALID_ARGUMENT by the error boundary."""
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request_cls = getattr(pb, method.input_type.name)
        response_cls = getattr(pb, method.output_type.name)
        behaviour = getattr(servicer, method.name)
        make = (
            grpc.stream_stream_rpc_method_handler
            if method.client_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            behaviour,
            request_deserializer=lenient(request_cls),
            response_serializer=response_cls.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    registered: Any = server  # grpcio >= 1.63 API, absent from its stubs
    registered.add_registered_method_handlers(service.full_name, handlers)


class GrpcFrontend:
    """The gRPC transport over one ``InferenceService``, on the native server or grpcio's."""

    def __init__(self, service: InferenceService, options: GrpcOptions) -> None:
        self._service = service
        self._options = options
        self._address = f"{options.address}:{options.port}"
        self._server: grpc.aio.Server | None = None
        try:
            self.transport, self.why = choose(
                options.transport,
                tls=options.tls is not None,
                grpcio_only=[flag for flag, _, _ in options.grpcio_args],
            )
        except ValueError as exc:
            raise VolleyError(str(exc)) from exc
        self.port = 0

    async def start(self) -> int:
        """Bind and start serving; returns the bound port."""
        options = self._options
        log.info("gRPC transport: %s (%s)", self.transport.value, self.why)
        server = create_server(
            self.transport,
            [
                ("grpc.max_send_message_length", options.max_message_bytes),
                ("grpc.max_receive_message_length", options.max_message_bytes),
                ("grpc.so_reuseport", 0),
                *options.channel_args,
                *((arg, value) for _, arg, value in options.grpcio_args),
            ],
        )
        servicer = InferenceServicer(self._service, options.restrictions)
        servicer.transport = f"grpc-{self.transport.value}"
        add_inference_service(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(
            HealthServicer(self._service.server_ready, options.restrictions), server
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
            if options.tls is not None:
                self.port = server.add_secure_port(self._address, options.tls.credentials())
            else:
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
