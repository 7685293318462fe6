"""Many models, one budget: LRU eviction and loading on demand, with no failed request."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest

from volley._proto.inference import grpc_service_pb2 as pb
from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc

from inproc import running_server
from onnx_models import add_constant
from server_process import ServerProcess

MODELS = 12
PADDING = 40 * 1024 * 1024
#: Room for four of the models (each holds ~46-51 MB once loaded).
BUDGET_MIB = 210
CONFIG = """backend: "onnxruntime"
max_batch_size: 8
optimization { graph { level: 2 } }
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


def write_models(root: Path, count: int = MODELS, padding: int = PADDING) -> Path:
    for i in range(count):
        model_dir = root / f"m{i}"
        (model_dir / "1").mkdir(parents=True)
        (model_dir / "config.pbtxt").write_text(CONFIG)
        onnx.save(
            add_constant(float(i), padding_bytes=padding), str(model_dir / "1" / "model.onnx")
        )
    return root


def request(model: str) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=model)
    msg.inputs.add(name="X", datatype="FP32", shape=[1, 4])
    msg.raw_input_contents.append(np.zeros((1, 4), np.float32).tobytes())
    return msg


def answer(response: pb.ModelInferResponse) -> float:
    return float(np.frombuffer(response.raw_output_contents[0], np.float32)[0])


def test_round_robin_over_twelve_models_in_a_budget_for_four(tmp_path: Path) -> None:
    repo = write_models(tmp_path / "repo")
    server = ServerProcess(
        repo,
        extra_args=[
            "--model-control-mode", "explicit",
            "--memory-budget", f"cpu={BUDGET_MIB}MiB",
            "--pin-model", "m0",
            "--model-min-residency-secs", "2",
        ],
    )  # fmt: skip
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        return int(Path(f"/proc/{server.proc.pid}/statm").read_text().split()[1]) * page

    async def scenario() -> tuple[int, list[str], int, list[int], list[int]]:
        baseline = rss()
        async with grpc.aio.insecure_channel(server.url) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for i in range(MODELS):
                await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=f"m{i}"))
            errors: list[str] = []
            ok = 0
            ready_counts: list[int] = []
            rss_readings: list[int] = []
            stop = time.monotonic() + 10

            async def client(offset: int) -> None:
                nonlocal ok
                i = offset
                while time.monotonic() < stop:
                    model = f"m{i % MODELS}"
                    i += 1
                    try:
                        response = await stub.ModelInfer(request(model), timeout=30)
                    except grpc.aio.AioRpcError as exc:
                        errors.append(f"{model}: {exc.code().name} {exc.details()}")
                        continue
                    if answer(response) != float(model[1:]):
                        errors.append(f"{model} answered {answer(response)}")
                    ok += 1

            async def watch() -> None:
                while time.monotonic() < stop:
                    index = await stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True))
                    names = {m.name for m in index.models}
                    assert "m0" in names, "the pinned model was evicted"
                    stats = await stub.ModelStatistics(pb.ModelStatisticsRequest())
                    held = sum(u.byte_size for s in stats.model_stats for u in s.memory_usage)
                    # READY models never hold more than the budget (measured footprints)
                    assert held <= BUDGET_MIB * 2**20, (held, sorted(names))
                    ready_counts.append(len(names))
                    rss_readings.append(rss())
                    await asyncio.sleep(0.1)

            await asyncio.gather(*(client(k * 3) for k in range(4)), watch())
        return baseline, errors, ok, ready_counts, rss_readings

    try:
        baseline, errors, ok, ready_counts, readings = asyncio.run(scenario())
        assert errors == [], server.log()
        assert ok > 0
        assert 2 <= max(ready_counts) < MODELS
        limit = (baseline + BUDGET_MIB * 2**20) * 1.10
        assert max(readings) <= limit, (baseline // 2**20, max(readings) // 2**20)
        log = server.log()
        assert "evicting model" in log
    finally:
        assert server.stop() == 0, server.log()


async def test_a_model_larger_than_the_budget_is_refused_with_the_numbers(tmp_path: Path) -> None:
    repo = write_models(tmp_path / "repo", count=1)
    async with running_server(repo, model_control_mode="explicit", memory_budget=["cpu=16MiB"]) as (
        _,
        stub,
        _ch,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="m0"))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = refused.value.details() or ""
        assert "model 'm0' needs" in details and "16.0 MiB" in details


async def test_requests_for_an_evicted_model_share_one_load(tmp_path: Path) -> None:
    repo = write_models(tmp_path / "repo", count=2, padding=32 * 2**20)
    async with running_server(
        repo,
        model_control_mode="explicit",
        load_models=["m0", "m1"],
        memory_budget=["cpu=48MiB"],  # one of the two at a time
        model_min_residency_secs=0,
    ) as (server, stub, _ch):
        index = await stub.RepositoryIndex(pb.RepositoryIndexRequest())
        states = {m.name: (m.state, m.reason) for m in index.models}
        assert states["m0"] == ("UNAVAILABLE", "evicted") and states["m1"][0] == "READY"
        loads = server.manager.stats.on_demand_loads
        responses = await asyncio.gather(*(stub.ModelInfer(request("m0")) for _ in range(5)))
        assert [answer(r) for r in responses] == [0.0] * 5
        assert server.manager.stats.on_demand_loads == loads + 1
        index = await stub.RepositoryIndex(pb.RepositoryIndexRequest())
        states = {m.name: (m.state, m.reason) for m in index.models}
        assert states["m1"] == ("UNAVAILABLE", "evicted") and states["m0"][0] == "READY"
