"""Run a real Volley server in-process on 127.0.0.1 (ephemeral port) with a client stub."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc

from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc
from volley.app import VolleyServer
from volley.settings import ServerSettings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "model_repository"


@asynccontextmanager
async def running_server(
    repository: Path, load_models: list[str] | None = None, **settings: Any
) -> AsyncIterator[tuple[VolleyServer, pb_grpc.GRPCInferenceServiceStub, grpc.aio.Channel]]:
    """Start a server on 127.0.0.1:0, yield it with a connected stub, then stop it.

    HTTP is served on 127.0.0.1 too, on a free port: ``server.http_port``.
    """
    config = ServerSettings(
        model_repository=[repository],
        grpc_address="127.0.0.1",
        grpc_port=0,
        load_model=load_models or [],
        **{"metrics_port": 0, "http_address": "127.0.0.1", "http_port": 0, **settings},
    )
    server = VolleyServer(config)
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield server, pb_grpc.GRPCInferenceServiceStub(channel), channel
    finally:
        await channel.close()
        await server.stop(grace=2)
