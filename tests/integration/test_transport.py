"""What differs between the native and grpcio transports, and what Volley does about it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from volley._proto.inference import grpc_service_pb2 as pb
from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc

from inproc import running_server
from onnx_models import write_matmul_chain

ROWS, WIDTH, LAYERS = 256, 512, 12


def slow_repository(root: Path) -> Path:
    write_matmul_chain(root / "slow", np.eye(WIDTH) * 0.5, LAYERS, ROWS)
    (root / "slow" / "config.pbtxt").write_text(
        'backend: "onnxruntime"\nmax_batch_size: 0\ninstance_group [{ count: 1 kind: KIND_CPU }]\n'
        'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n'
    )
    return root


def slow_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="slow")
    request.inputs.add(name="X", datatype="FP32", shape=[ROWS, WIDTH])
    request.raw_input_contents.append(np.ones((ROWS, WIDTH), np.float32).tobytes())
    return request


async def test_the_requested_transport_serves(
    example_repo: Path, grpc_transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="volley.frontend")
    async with running_server(example_repo) as (server, stub, _ch):
        assert server.grpc_transport == grpc_transport
        ready = await stub.ServerReady(pb.ServerReadyRequest())
        assert ready.ready
    assert f"gRPC transport: {grpc_transport}" in caplog.text


async def test_auto_selects_the_native_transport(
    example_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOLLEY_GRPC_TRANSPORT", "auto")
    async with running_server(example_repo) as (server, _stub, _ch):
        assert server.grpc_transport == "native"


async def test_health_watch_is_unimplemented_and_unknown_services_not_found(
    example_repo: Path,
) -> None:
    async with running_server(example_repo) as (_, _stub, channel):
        health = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as watched:
            async for _ in health.Watch(health_pb2.HealthCheckRequest()):
                pass
        assert watched.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        served = await health.Check(
            health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")
        )
        assert served.status == health_pb2.HealthCheckResponse.SERVING


async def test_stop_answers_in_flight_calls_and_refuses_new_ones(tmp_path: Path) -> None:
    async with running_server(slow_repository(tmp_path)) as (server, stub, _ch):
        await stub.ModelInfer(slow_request(), timeout=30)  # warm
        in_flight = [
            asyncio.ensure_future(stub.ModelInfer(slow_request(), timeout=30)) for _ in range(3)
        ]
        await asyncio.sleep(0.05)
        stopping = asyncio.ensure_future(server.stop(grace=20))
        await asyncio.sleep(0.05)
        late_channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        try:
            late = pb_grpc.GRPCInferenceServiceStub(late_channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await late.ModelInfer(slow_request(), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await late_channel.close()
        responses = await asyncio.gather(*in_flight)
        for response in responses:
            y = np.frombuffer(response.raw_output_contents[0], np.float32)
            np.testing.assert_allclose(y[:4], [0.5**LAYERS] * 4, rtol=1e-6)
        await stopping
