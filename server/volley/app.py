"""Composition root: settings -> repository -> schedulers -> gRPC server."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from volley._proto.inference import grpc_service_pb2 as pb
from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc
from volley.backends.devices import cuda_device_count
from volley.config import ControlMode, ServerSettings
from volley.errors import VolleyError
from volley.frontend.health import HealthServicer
from volley.frontend.servicer import InferenceServicer
from volley.repository.manager import ModelManager
from volley.repository.registry import ModelState, Registry

log = logging.getLogger("volley")

_MAX_MESSAGE = 2**31 - 1
_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


class VolleyServer:
    """One running Volley: its registry, model manager and gRPC server."""

    def __init__(self, settings: ServerSettings, load_models: list[str] | None = None) -> None:
        self.settings = settings
        self.registry = Registry()
        self.manager = ModelManager(
            settings.model_repository,
            self.registry,
            auto_complete=not settings.strict_model_config,
            default_max_batch_size=settings.default_max_batch_size,
            inline_execution_us=settings.inline_execution_us,
            gpu_count=cuda_device_count(),
        )
        self.explicit_control = settings.model_control_mode is ControlMode.EXPLICIT
        self._load_models = load_models or []
        self.live = False
        self.draining = False
        self.port = 0
        self._grpc: grpc.aio.Server | None = None

    def ready(self) -> bool:
        """Server readiness as Triton defines it (strict: every known version READY)."""
        if not self.live or self.draining:
            return False
        if not self.settings.strict_readiness:
            return True
        for entry in self.registry.entries():
            for mv in entry.versions.values():
                if mv.state is not ModelState.READY and mv.reason != "unloaded":
                    return False
            if not entry.versions and entry.reason:
                return False
        return True

    async def start(self) -> int:
        """Load models, then bind and start the gRPC server; returns the bound port."""
        for repo in self.settings.model_repository:
            if not repo.is_dir():
                raise VolleyError(f"model repository '{repo}' is not a directory")
        await self._load_initial_models()
        server = grpc.aio.server(
            options=[
                ("grpc.max_send_message_length", _MAX_MESSAGE),
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.so_reuseport", 0),
            ]
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(self), server)
        health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(self.ready), server)
        reflection.enable_server_reflection(
            (
                _SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        address = f"{self.settings.grpc_address}:{self.settings.grpc_port}"
        self.port = server.add_insecure_port(address)
        if self.port == 0:
            raise VolleyError(f"could not bind gRPC address {address}")
        await server.start()
        self._grpc = server
        self.live = True
        log.info("serving gRPC on %s:%d", self.settings.grpc_address, self.port)
        return self.port

    async def _load_initial_models(self) -> None:
        if self.explicit_control:
            names = list(self.manager.model_dirs()) if "*" in self._load_models else []
            names += [n for n in self._load_models if n != "*"]
        else:
            names = list(self.manager.model_dirs())
        for name in names:
            try:
                await self.manager.load(name)
            except VolleyError as exc:
                log.error("model '%s' is unavailable: %s", name, exc.message)

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, let in-flight ones finish (bounded by ``grace``), unload."""
        self.draining = True
        if grace is None:
            grace = self.settings.exit_timeout_secs
        if self._grpc is not None:
            await self._grpc.stop(grace)
            self._grpc = None
        await self.manager.shutdown()
        self.live = False


async def serve(
    settings: ServerSettings, load_models: list[str] | None = None, port_file: Path | None = None
) -> None:
    """Run a server until SIGTERM or SIGINT, then shut down gracefully."""
    server = VolleyServer(settings, load_models)
    port = await server.start()
    if port_file is not None:
        port_file.write_text(f"{port}\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: finishing in-flight requests (up to %ss)", settings.exit_timeout_secs)
    await server.stop()
    log.info("stopped")
