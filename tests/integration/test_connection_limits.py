"""Connection limits: streams per connection (both transports), and the connection count,
idle and age limits that only grpcio enforces (they select it; native refuses them)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest

from volley._proto.inference import grpc_service_pb2 as pb
from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc
from volley.app import VolleyServer
from volley.errors import VolleyError
from volley.settings import ServerSettings

from inproc import running_server
from onnx_models import write_matmul_chain

WIDTH = 256


def slow_repo(root: Path) -> Path:
    write_matmul_chain(root / "slow", np.eye(WIDTH, dtype=np.float32), 48, "n")
    (root / "slow" / "config.pbtxt").write_text(
        'backend: "onnxruntime"\nmax_batch_size: 1\n'
        "instance_group [ { count: 4 kind: KIND_CPU } ]\n"
        'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n'
    )
    return root


def request() -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="slow")
    msg.inputs.add(name="X", datatype="FP32", shape=[1, WIDTH])
    msg.raw_input_contents.append(np.ones((1, WIDTH), np.float32).tobytes())
    return msg


async def test_streams_per_connection_are_limited(tmp_path: Path, grpc_transport: str) -> None:
    repo = slow_repo(tmp_path)
    async with running_server(repo, grpc_max_concurrent_streams=2) as (server, stub, _ch):
        assert server.grpc_transport == grpc_transport
        assert (await stub.ServerLive(pb.ServerLiveRequest())).live
        peak = 0
        done = asyncio.Event()

        async def watch() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, server.service.inflight)
                await asyncio.sleep(0.001)

        watcher = asyncio.ensure_future(watch())
        calls = (stub.ModelInfer(request(), timeout=30) for _ in range(8))
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        done.set()
        await watcher
    assert 1 <= peak <= 2  # one connection never has more than two calls in the server
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    for error in refused:  # grpcio refuses streams over the limit (REFUSED_STREAM): retriable
        assert isinstance(error, grpc.aio.AioRpcError), error
        assert error.code() is grpc.StatusCode.UNAVAILABLE and "RST_STREAM" in str(error.details())
    assert len(outcomes) - len(refused) >= 2


def settings(repo: Path, **extra: object) -> ServerSettings:
    return ServerSettings(
        model_repository=[repo],
        grpc_address="127.0.0.1",
        grpc_port=0,
        http_port=0,
        http_address="127.0.0.1",
        metrics_port=0,
        **extra,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    "limit",
    [
        {"grpc_max_connections": 2},
        {"grpc_max_connection_idle_ms": 200},
        {"grpc_max_connection_age_ms": 60000},
    ],
)
def test_grpcio_only_limits_select_grpcio(tmp_path: Path, limit: dict[str, int]) -> None:
    auto = VolleyServer(settings(tmp_path, grpc_transport="auto", **limit))
    assert auto.grpc_transport == "grpcio"
    with pytest.raises(VolleyError, match="native cannot honour --grpc-max-connection"):
        VolleyServer(settings(tmp_path, grpc_transport="native", **limit))


async def test_connections_beyond_the_limit_are_refused(tmp_path: Path) -> None:
    repo = slow_repo(tmp_path)
    async with running_server(repo, grpc_transport="auto", grpc_max_connections=2) as (
        server,
        _stub,
        _ch,
    ):
        assert server.grpc_transport == "grpcio"
        target = f"127.0.0.1:{server.port}"
        options = [("grpc.use_local_subchannel_pool", 1)]  # one connection per channel
        channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(4)]
        try:
            outcomes: list[str] = []
            for channel in channels:  # connect one after the other; each stays open
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                try:
                    await stub.ServerLive(pb.ServerLiveRequest(), timeout=2)
                    outcomes.append("ok")
                except grpc.aio.AioRpcError as exc:
                    outcomes.append(exc.code().name)
        finally:
            for channel in channels:
                await channel.close()
    assert outcomes[:2] == ["ok", "ok"]
    assert all(o != "ok" for o in outcomes[2:]), outcomes


async def test_idle_connections_are_closed(tmp_path: Path) -> None:
    repo = slow_repo(tmp_path)
    limits = {"grpc_transport": "auto", "grpc_max_connection_idle_ms": 300}
    async with running_server(repo, **limits) as (_server, stub, channel):
        assert (await stub.ServerLive(pb.ServerLiveRequest())).live
        assert channel.get_state() is grpc.ChannelConnectivity.READY
        for _ in range(40):
            await asyncio.sleep(0.1)
            if channel.get_state() is not grpc.ChannelConnectivity.READY:
                break
        assert channel.get_state() is grpc.ChannelConnectivity.IDLE  # the server closed it
        assert (await stub.ServerLive(pb.ServerLiveRequest())).live  # and a call reconnects
