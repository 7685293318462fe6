"""Releases on a served model whose outputs reveal their version: labels, weighted and sticky
splits, shadow copies, live policy changes, and the response cache, under concurrent load."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from volley._proto.inference import grpc_service_pb2 as pb
from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc

from inproc import running_server
from onnx_models import add_constant, make_model_dir

CONFIG = """backend: "onnxruntime"
max_batch_size: 8
dynamic_batching { max_queue_delay_microseconds: 200 }
"""


def versioned(repo: Path, traffic: str, config: str = CONFIG, versions: int = 3) -> Path:
    """Model ``m``: version v answers ``X + v``."""
    model_dir = repo / "m"
    for v in range(1, versions + 1):
        make_model_dir(repo, "m", add_constant(float(v)), versions=(v,))
    (model_dir / "config.pbtxt").write_text(config)
    (model_dir / "traffic.yaml").write_text(traffic)
    return model_dir


def request(version: str = "", user: str | None = None, x: float = 0.0) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="m", model_version=version)
    msg.inputs.add(name="X", datatype="FP32", shape=[1, 4])
    msg.raw_input_contents.append(np.full((1, 4), x, np.float32).tobytes())
    if user is not None:
        msg.parameters["user_id"].string_param = user
    return msg


def served_version(response: pb.ModelInferResponse, x: float = 0.0) -> int:
    y = np.frombuffer(response.raw_output_contents[0], np.float32)
    version = round(float(y[0]) - x)
    assert response.model_version == str(version)
    return version


def _get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        body: bytes = response.read()
    return body


async def get_json(port: int, path: str) -> dict[str, Any]:
    """GET on a worker thread: the server under test shares this event loop."""
    doc: dict[str, Any] = json.loads(await asyncio.to_thread(_get, port, path))
    return doc


async def run_all(
    stub: pb_grpc.GRPCInferenceServiceStub, requests: list[pb.ModelInferRequest], width: int = 32
) -> list[pb.ModelInferResponse]:
    slots = asyncio.Semaphore(width)

    async def one(msg: pb.ModelInferRequest) -> pb.ModelInferResponse:
        async with slots:
            return await stub.ModelInfer(msg, timeout=30)

    return await asyncio.gather(*(one(m) for m in requests))


async def test_labels_work_wherever_a_version_does(tmp_path: Path) -> None:
    versioned(tmp_path, "labels: {stable: 1, canary: 2}\n")
    async with running_server(tmp_path) as (server, stub, _ch):
        assert served_version(await stub.ModelInfer(request("canary"))) == 2
        assert served_version(await stub.ModelInfer(request("stable"))) == 1
        assert served_version(await stub.ModelInfer(request())) == 3  # latest by policy
        ready = await stub.ModelReady(pb.ModelReadyRequest(name="m", version="canary"))
        assert ready.ready
        meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="m"))
        assert dict(meta.labels) == {"canary": "2", "stable": "1"}
        assert list(meta.versions) == ["1", "2", "3"]
        canary = await stub.ModelMetadata(pb.ModelMetadataRequest(name="m", version="canary"))
        assert list(canary.versions) == ["2"]
        config = await stub.ModelConfig(pb.ModelConfigRequest(name="m", version="stable"))
        assert config.config.name == "m"
        stats = await stub.ModelStatistics(pb.ModelStatisticsRequest(name="m", version="canary"))
        assert [s.version for s in stats.model_stats] == ["2"]
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.ModelInfer(request("beta"))
        assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
        assert "labels: canary, stable" in (unknown.value.details() or "")
        rest = await get_json(server.http_port, "/v2/models/m/versions/canary")
        assert rest["versions"] == ["2"] and rest["labels"] == {"canary": "2", "stable": "1"}


async def test_weighted_split_under_load(tmp_path: Path) -> None:
    versioned(tmp_path, "split: {1: 90, 2: 10}\n")
    async with running_server(tmp_path) as (_server, stub, _ch):
        responses = await run_all(stub, [request() for _ in range(3000)])
        pinned = await stub.ModelInfer(request("3"))  # naming a version bypasses the split
    counts = Counter(served_version(r) for r in responses)
    assert set(counts) <= {1, 2}
    assert abs(counts[2] / 3000 - 0.10) <= 0.02, counts
    assert served_version(pinned) == 3


async def test_sticky_users_stay_on_one_version(tmp_path: Path) -> None:
    versioned(tmp_path, "split: {1: 50, 2: 50}\nsticky: request_parameter:user_id\n")
    users = [f"user-{i}" for i in range(100)]
    async with running_server(tmp_path) as (_server, stub, _ch):
        first = await run_all(stub, [request(user=u) for u in users])
        again = await run_all(stub, [request(user=u) for u in users * 3])
    chosen = {u: served_version(r) for u, r in zip(users, first, strict=True)}
    for u, r in zip(users * 3, again, strict=True):
        assert served_version(r) == chosen[u]
    assert 20 < sum(v == 1 for v in chosen.values()) < 80


async def test_shadow_copies_are_compared_and_never_returned(tmp_path: Path) -> None:
    versioned(tmp_path, "shadow: {version: 3, percent: 100}\nsplit: {1: 100}\n")
    async with running_server(tmp_path) as (server, stub, _ch):
        responses = await run_all(stub, [request() for _ in range(200)])
        assert {served_version(r) for r in responses} == {1}
        view: dict[str, Any] = {}
        for _ in range(100):
            view = await get_json(server.http_port, "/v2/models/m/traffic")
            pair = view["shadow"][0] if view["shadow"] else {}
            if pair and pair["compared"] + pair["dropped"] + pair["failed"] >= 200:
                break
            await asyncio.sleep(0.05)
        metrics = (
            urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5)
            .read()
            .decode()
        )
    (pair,) = view["shadow"]
    assert (pair["primary"], pair["shadow"]) == (1, 3)
    assert pair["sent"] + pair["dropped"] == 200 and pair["failed"] == 0
    assert pair["compared"] == pair["sent"] > 0
    assert pair["max_abs_diff"] == pytest.approx(2.0)  # version 3 adds 2 more than version 1
    assert view["policy"]["shadow"] == {"version": 3, "percent": 100.0}
    assert 'volley_shadow_requests_total{model="m",primary="1",result="compared",shadow="3"}' in (
        metrics
    )


def broken_shadow() -> onnx.ModelProto:
    """Same signature, but fails at run time (a Gather index out of range)."""
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["X", "idx"], ["G"], axis=1),
            helper.make_node("Identity", ["G"], ["Y"]),
        ],
        "broken",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 4])],
        initializer=[helper.make_tensor("idx", TensorProto.INT64, [4], [0, 1, 2, 99])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


async def test_shadow_failures_never_reach_the_client(tmp_path: Path) -> None:
    model_dir = versioned(tmp_path, "shadow: {version: 3, percent: 100}\n", versions=2)
    make_model_dir(tmp_path, "m", broken_shadow(), versions=(3,))
    (model_dir / "traffic.yaml").write_text("split: {2: 100}\nshadow: {version: 3}\n")
    async with running_server(tmp_path) as (server, stub, _ch):
        responses = await run_all(stub, [request() for _ in range(50)])
        assert {served_version(r) for r in responses} == {2}
        pair: dict[str, Any] = {}
        for _ in range(100):
            view = await get_json(server.http_port, "/v2/models/m/traffic")
            pair = view["shadow"][0]
            if pair["failed"] + pair["dropped"] >= 50:
                break
            await asyncio.sleep(0.05)
    assert pair["failed"] > 0 and pair["compared"] == 0


SLOW_CONFIG = """backend: "onnxruntime"
max_batch_size: 1
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
"""


async def test_a_shadow_that_falls_behind_is_dropped(tmp_path: Path) -> None:
    model_dir = versioned(tmp_path, "", config=SLOW_CONFIG, versions=1)
    # version 2: a slow model with X [N, 4] in and Y [N, 4] out
    slow = helper.make_graph(
        [
            helper.make_node("Pad", ["X", "pads"], ["P"]),
            *[
                helper.make_node("MatMul", [f"h{i}" if i else "P", "w"], [f"h{i + 1}"])
                for i in range(64)
            ],
            helper.make_node("Slice", ["h64", "starts", "ends", "axes"], ["Y"]),
        ],
        "slow",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 4])],
        initializer=[
            helper.make_tensor("pads", TensorProto.INT64, [4], [0, 0, 0, 252]),
            helper.make_tensor(
                "w", TensorProto.FLOAT, [256, 256], np.eye(256, dtype=np.float32).ravel().tolist()
            ),
            helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
            helper.make_tensor("ends", TensorProto.INT64, [1], [4]),
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
        ],
    )
    model = helper.make_model(slow, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    make_model_dir(tmp_path, "m", model, versions=(2,))
    (model_dir / "traffic.yaml").write_text("split: {1: 100}\nshadow: {version: 2}\n")
    async with running_server(tmp_path) as (server, stub, _ch):
        started = time.monotonic()
        responses = await run_all(stub, [request() for _ in range(400)], width=32)
        elapsed = time.monotonic() - started
        view = await get_json(server.http_port, "/v2/models/m/traffic")
    assert {served_version(r) for r in responses} == {1}
    (pair,) = view["shadow"]
    assert pair["dropped"] > 0, pair
    assert pair["sent"] <= 400 - pair["dropped"]
    assert elapsed < 30


async def test_policy_changes_apply_live_without_failing_requests(tmp_path: Path) -> None:
    model_dir = versioned(tmp_path, "split: {1: 100}\n")
    settings = {
        "model_control_mode": "poll",
        "repository_poll_secs": 0.1,
        "repository_settle_secs": 0.1,
    }
    async with running_server(tmp_path, **settings) as (server, stub, _ch):
        errors: list[BaseException] = []
        seen: list[int] = []
        stop = asyncio.Event()

        async def load() -> None:
            while not stop.is_set():
                try:
                    seen.append(served_version(await stub.ModelInfer(request(), timeout=10)))
                except grpc.aio.AioRpcError as exc:
                    errors.append(exc)

        workers = [asyncio.ensure_future(load()) for _ in range(8)]
        await asyncio.sleep(0.5)
        loads_before = server.manager.stats.loads["success"]
        (model_dir / "traffic.yaml").write_text("split: {2: 100}\nlabels: {next: 2}\n")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not seen or seen[-1] != 2):
            await asyncio.sleep(0.1)
        marker = len(seen)
        await asyncio.sleep(0.3)
        (model_dir / "traffic.yaml").write_text("split: {2: -1}\n")  # broken: ignored
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*workers)
        meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="m"))
        index = await stub.RepositoryIndex(pb.RepositoryIndexRequest())
    assert not errors, errors[:3]
    assert 1 in seen[:marker] and set(seen[marker:]) == {2}
    assert dict(meta.labels) == {"next": "2"}
    assert server.manager.stats.loads["success"] == loads_before + 1
    assert any("negative" in m.reason for m in index.models), index


CACHED = """backend: "onnxruntime"
max_batch_size: 8
dynamic_batching { }
response_cache { enable: true }
"""


def random_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [
            helper.make_node("RandomUniformLike", ["X"], ["R"]),
            helper.make_node("Add", ["X", "R"], ["Y"]),
        ],
        "random",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


async def test_response_cache(tmp_path: Path) -> None:
    make_model_dir(tmp_path, "m", add_constant(1.0), config=CACHED)
    make_model_dir(tmp_path, "r", random_model(), config=CACHED)
    plain = CACHED.replace("response_cache { enable: true }", "")
    make_model_dir(tmp_path, "p", add_constant(1.0), config=plain)
    async with running_server(tmp_path, cache_config=["local,size=1MiB"]) as (server, stub, _ch):
        distinct = [request(x=float(i)) for i in range(20)]
        first = await run_all(stub, distinct)
        second = await run_all(stub, distinct * 5)
        for i, r in enumerate(second):
            assert r.raw_output_contents[0] == first[i % 20].raw_output_contents[0]
        stats = await stub.ModelStatistics(pb.ModelStatisticsRequest(name="m"))
        (s,) = stats.model_stats
        for name in ("r", "p"):
            msg = request(x=1.0)
            msg.model_name = name
            for _ in range(3):
                await stub.ModelInfer(msg)
        others = await stub.ModelStatistics(pb.ModelStatisticsRequest())
        rest = await get_json(server.http_port, "/v2/models/m/stats")
    assert s.inference_stats.cache_hit.count == 100
    assert s.inference_stats.cache_miss.count == 20
    assert s.inference_count == 20  # hits ran nothing
    assert s.inference_stats.success.count == 120
    assert s.inference_stats.cache_hit.ns > 0
    by_name = {m.name: m for m in others.model_stats}
    for name in ("r", "p"):
        assert by_name[name].inference_stats.cache_hit.count == 0
        assert by_name[name].inference_count == 3
    assert rest["model_stats"][0]["inference_stats"]["cache_hit"]["count"] == 100


async def test_a_load_request_can_carry_the_policy(tmp_path: Path) -> None:
    versioned(tmp_path, "")
    (tmp_path / "m" / "traffic.yaml").unlink()
    settings = {"model_control_mode": "explicit"}
    async with running_server(tmp_path, load_models=["m"], **settings) as (_server, stub, _ch):
        meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="m"))
        assert list(meta.versions) == ["3"] and not meta.labels
        load = pb.RepositoryModelLoadRequest(model_name="m")
        load.parameters["traffic"].string_param = '{"labels": {"old": 1}, "split": {"1": 100}}'
        await stub.RepositoryModelLoad(load)
        meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="m"))
        assert list(meta.versions) == ["1", "3"] and dict(meta.labels) == {"old": "1"}
        assert served_version(await stub.ModelInfer(request())) == 1
        bad = pb.RepositoryModelLoadRequest(model_name="m")
        bad.parameters["traffic"].string_param = "split: {9: 1}"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RepositoryModelLoad(bad)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "[9]" in (refused.value.details() or "")
        assert served_version(await stub.ModelInfer(request())) == 1  # the policy in force stays
