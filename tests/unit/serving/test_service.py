"""``InferenceService`` over a real ModelManager and Registry, without any transport."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from volley.errors import InvalidArgument, NotFound, Unavailable, VolleyError
from volley.serving.lifecycle import ModelManager
from volley.serving.registry import Registry
from volley.serving.service import InferenceService, StreamResult
from volley.serving.types import (
    IndexEntry,
    InferenceRequest,
    InputTensor,
    RequestedOutput,
    TensorMetadata,
)

from onnx_models import add_two, identity, make_model_dir, unknown_op


def make_service(
    repo: Path, *, explicit_control: bool = True, strict_readiness: bool = True
) -> InferenceService:
    registry = Registry()
    manager = ModelManager([repo], registry)
    service = InferenceService(
        registry,
        manager,
        server_name="volley-test",
        server_version="9.9",
        extensions=("model_repository",),
        explicit_control=explicit_control,
        strict_readiness=strict_readiness,
    )
    service.live = True
    return service


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    make_model_dir(tmp_path, "add", add_two())
    make_model_dir(
        tmp_path, "ident", identity(), versions=(1, 2), config="version_policy: { all { } }\n"
    )
    make_model_dir(tmp_path, "garbage", b"not an onnx model")
    make_model_dir(tmp_path, "badop", unknown_op())
    make_model_dir(tmp_path, "never", identity())
    return tmp_path


@pytest.fixture
async def service(repo: Path) -> AsyncIterator[InferenceService]:
    svc = make_service(repo)
    await svc.manager.load("add")
    await svc.manager.load("ident")
    try:
        yield svc
    finally:
        await svc.manager.shutdown()


def add_request(
    a: np.ndarray, b: np.ndarray, request_id: str = "r1", version: str = ""
) -> InferenceRequest:
    return InferenceRequest(
        model_name="add",
        model_version=version,
        id=request_id,
        inputs=[
            InputTensor("a", "FP32", list(a.shape), raw=a.astype(np.float32).tobytes()),
            InputTensor("b", "FP32", list(b.shape), raw=b.astype(np.float32).tobytes()),
        ],
        arrival_ns=time.monotonic_ns(),
    )


# -- readiness ----------------------------------------------------------------------------------


async def test_server_ready_needs_live_and_not_draining(service: InferenceService) -> None:
    assert service.server_ready()
    service.live = False
    assert not service.server_ready()
    service.live = True
    service.draining = True
    assert not service.server_ready()
    service.draining = False
    assert service.server_ready()


async def test_server_without_models_is_ready_once_live(repo: Path) -> None:
    svc = make_service(repo)
    assert svc.server_ready(), "models never loaded do not block readiness"
    svc.live = False
    assert not svc.server_ready()


@pytest.mark.parametrize("broken", ["garbage", "badop"])
async def test_failed_model_blocks_strict_readiness(repo: Path, broken: str) -> None:
    strict = make_service(repo, strict_readiness=True)
    lenient = make_service(repo, strict_readiness=False)
    try:
        for svc in (strict, lenient):
            await svc.manager.load("add")
            with pytest.raises(VolleyError):
                await svc.manager.load(broken)
        assert not strict.server_ready()
        assert lenient.server_ready()
        lenient.draining = True
        assert not lenient.server_ready()
    finally:
        await strict.manager.shutdown()
        await lenient.manager.shutdown()


async def test_unloaded_model_does_not_block_readiness(service: InferenceService) -> None:
    await service.unload("ident")
    assert service.server_ready()
    assert not service.model_ready("ident", "1")
    assert service.model_ready("add", "")


async def test_model_ready(service: InferenceService) -> None:
    assert service.model_ready("ident", "")
    assert service.model_ready("ident", "1")
    with pytest.raises(NotFound):
        service.model_ready("ghost", "")
    with pytest.raises(NotFound):
        service.model_ready("ident", "3")


# -- metadata -----------------------------------------------------------------------------------


async def test_server_metadata(service: InferenceService) -> None:
    md = service.server_metadata()
    assert (md.name, md.version, md.extensions) == ("volley-test", "9.9", ("model_repository",))


async def test_model_metadata(service: InferenceService) -> None:
    md = service.model_metadata("add", "")
    assert md.name == "add"
    assert md.versions == ["1"]
    assert md.platform == "onnxruntime_onnx"
    assert md.inputs == [TensorMetadata("a", "FP32", [-1, 3]), TensorMetadata("b", "FP32", [-1, 3])]
    assert md.outputs == [
        TensorMetadata("sum", "FP32", [-1, 3]),
        TensorMetadata("diff", "FP32", [-1, 3]),
    ]
    assert service.model_metadata("ident", "").versions == ["1", "2"]
    assert service.model_metadata("ident", "1").versions == ["1"]


async def test_model_metadata_errors(service: InferenceService) -> None:
    with pytest.raises(NotFound):
        service.model_metadata("ghost", "")
    with pytest.raises(InvalidArgument):
        service.model_metadata("add", "x")
    await service.unload("add")
    with pytest.raises(Unavailable):
        service.model_metadata("add", "1")


async def test_model_config(service: InferenceService) -> None:
    config = service.model_config("add", "1")
    assert config.name == "add"
    assert config.backend == "onnxruntime"
    assert config.max_batch_size == 4
    assert [t.name for t in config.input] == ["a", "b"]
    with pytest.raises(NotFound):
        service.model_config("add", "2")


# -- inference ----------------------------------------------------------------------------------


async def test_infer_returns_outputs_and_records_one_success(service: InferenceService) -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.full((2, 3), 10.0, dtype=np.float32)
    response = await service.infer(add_request(a, b, "req-7"))
    assert (response.model_name, response.model_version, response.id) == ("add", "1", "req-7")
    assert [o.name for o in response.outputs] == ["sum", "diff"]
    assert [o.datatype for o in response.outputs] == ["FP32", "FP32"]
    np.testing.assert_array_equal(response.outputs[0].array, a + b)
    np.testing.assert_array_equal(response.outputs[1].array, a - b)
    stats = service.registry.resolve("add", "1").stats
    assert stats.success.count == 1
    assert stats.success.ns > 0
    assert stats.fail.count == 0
    assert stats.inference_count == 2
    assert stats.execution_count == 1
    assert list(stats.batches) == [2]
    assert stats.last_inference_ms > 0


async def test_infer_with_requested_output_and_values(service: InferenceService) -> None:
    request = InferenceRequest(
        model_name="add",
        model_version="1",
        id="",
        inputs=[
            InputTensor("a", "FP32", [1, 3], values=[1.0, 2.0, 3.0]),
            InputTensor("b", "FP32", [1, 3], values=[0.5, 0.5, 0.5]),
        ],
        outputs=[RequestedOutput("diff")],
        arrival_ns=time.monotonic_ns(),
    )
    response = await service.infer(request)
    assert [o.name for o in response.outputs] == ["diff"]
    np.testing.assert_array_equal(
        response.outputs[0].array, np.array([[0.5, 1.5, 2.5]], dtype=np.float32)
    )


async def test_bad_request_records_one_failure(service: InferenceService) -> None:
    a = np.ones((1, 3), dtype=np.float32)
    request = add_request(a, a)
    request.inputs[1].datatype = "INT32"
    with pytest.raises(InvalidArgument, match="data-type is 'INT32'"):
        await service.infer(request)
    stats = service.registry.resolve("add", "").stats
    assert stats.fail.count == 1
    assert stats.success.count == 0
    assert stats.inference_count == 0
    assert stats.execution_count == 0


async def test_infer_unknown_model_or_version(service: InferenceService) -> None:
    a = np.ones((1, 3), dtype=np.float32)
    request = add_request(a, a)
    request.model_name = "ghost"
    with pytest.raises(NotFound):
        await service.infer(request)
    with pytest.raises(NotFound):
        await service.infer(add_request(a, a, version="5"))
    stats = service.registry.resolve("add", "").stats
    assert (stats.success.count, stats.fail.count) == (0, 0)


async def test_infer_after_unload_is_unavailable(service: InferenceService) -> None:
    await service.unload("add")
    a = np.ones((1, 3), dtype=np.float32)
    with pytest.raises(NotFound, match="no available versions"):
        await service.infer(add_request(a, a))
    with pytest.raises(Unavailable):
        await service.infer(add_request(a, a, version="1"))


# -- statistics ---------------------------------------------------------------------------------


async def test_statistics_rules(service: InferenceService) -> None:
    every = service.statistics("", "")
    assert [(s.name, s.version) for s in every] == [("add", 1), ("ident", 1), ("ident", 2)]
    assert [(s.name, s.version) for s in service.statistics("ident", "")] == [
        ("ident", 1),
        ("ident", 2),
    ]
    (one,) = service.statistics("ident", "2")
    assert one is service.registry.resolve("ident", "2").stats
    with pytest.raises(InvalidArgument, match="'ghost' is not available"):
        service.statistics("ghost", "")
    with pytest.raises(NotFound):
        service.statistics("ident", "9")


async def test_statistics_skip_versions_that_are_not_ready(service: InferenceService) -> None:
    await service.unload("ident")
    assert [(s.name, s.version) for s in service.statistics("", "")] == [("add", 1)]
    with pytest.raises(InvalidArgument, match="'ident' is not available"):
        service.statistics("ident", "")
    with pytest.raises(InvalidArgument):
        service.statistics("ident", "1")


async def test_statistics_of_failed_model(service: InferenceService) -> None:
    with pytest.raises(VolleyError):
        await service.manager.load("garbage")
    with pytest.raises(InvalidArgument, match="'garbage' is not available"):
        service.statistics("garbage", "")


# -- repository ---------------------------------------------------------------------------------


async def test_repository_index(service: InferenceService) -> None:
    with pytest.raises(VolleyError):
        await service.manager.load("garbage")
    with pytest.raises(VolleyError):
        await service.manager.load("badop")
    await service.unload("ident")
    rows = service.repository_index(ready_only=False)
    by_name: dict[str, list[IndexEntry]] = {}
    for row in rows:
        by_name.setdefault(row.name, []).append(row)
    assert [r.name for r in rows] == ["add", "badop", "garbage", "ident", "ident", "never"]
    assert by_name["add"] == [IndexEntry("add", "1", "READY", "")]
    (badop,) = by_name["badop"]
    assert (badop.version, badop.state) == ("1", "UNAVAILABLE")
    assert "NoSuchOperator" in badop.reason
    (garbage,) = by_name["garbage"]
    assert (garbage.version, garbage.state) == (
        "1",
        "UNAVAILABLE",
    )  # the corrupt file is in version 1
    assert "cannot read ONNX model" in garbage.reason
    assert by_name["ident"] == [
        IndexEntry("ident", "1", "UNAVAILABLE", "unloaded"),
        IndexEntry("ident", "2", "UNAVAILABLE", "unloaded"),
    ]
    assert by_name["never"] == [IndexEntry("never")]
    assert service.repository_index(ready_only=True) == [IndexEntry("add", "1", "READY", "")]


async def test_load_and_unload_refused_without_explicit_control(repo: Path) -> None:
    svc = make_service(repo, explicit_control=False)
    with pytest.raises(Unavailable, match="not allowed"):
        await svc.load("add", {})
    with pytest.raises(Unavailable, match="not allowed"):
        await svc.unload("add")
    assert svc.registry.get("add") is None


async def test_explicit_load_and_unload(repo: Path) -> None:
    svc = make_service(repo, explicit_control=True)
    try:
        with pytest.raises(InvalidArgument, match="unrecognized load parameter"):
            await svc.load("add", {"weights": "{}"})
        assert svc.registry.get("add") is None
        await svc.load("add", {})
        assert svc.model_ready("add", "1")
        await svc.unload("add")
        assert not svc.model_ready("add", "1")
        with pytest.raises(InvalidArgument, match="load failed for model 'ghost'"):
            await svc.load("ghost", {})
        with pytest.raises(InvalidArgument, match="load failed for model 'garbage'"):
            await svc.load("garbage", {})
    finally:
        await svc.manager.shutdown()


# -- streaming ----------------------------------------------------------------------------------


async def messages(items: list[int]) -> AsyncIterator[int]:
    for item in items:
        yield item


def convert(message: int) -> InferenceRequest:
    if message == 3:
        raise InvalidArgument("message 3 cannot be converted")
    width = 5 if message == 5 else 4  # 5: a shape the model rejects
    x = np.full((1, width), float(message), dtype=np.float32)
    return InferenceRequest(
        model_name="ident",
        model_version="",
        id=f"m{message}",
        inputs=[InputTensor("x", "FP32", [1, width], raw=x.tobytes())],
        arrival_ns=time.monotonic_ns(),
    )


async def test_stream_results_in_arrival_order_with_per_message_errors(
    service: InferenceService,
) -> None:
    items = list(range(8))
    results: list[StreamResult[int]] = [r async for r in service.stream(messages(items), convert)]
    assert [r.source for r in results] == items
    for r in results:
        if r.source == 3:
            assert isinstance(r.error, InvalidArgument)
            assert "cannot be converted" in str(r.error)
            assert r.response is None
        elif r.source == 5:
            assert isinstance(r.error, InvalidArgument)
            assert "unexpected shape" in str(r.error)
            assert r.response is None
        else:
            assert r.error is None
            assert r.response is not None
            assert r.response.id == f"m{r.source}"
            assert r.response.model_version == "2"
            np.testing.assert_array_equal(
                r.response.outputs[0].array, np.full((1, 4), float(r.source), dtype=np.float32)
            )
    stats = service.registry.resolve("ident", "2").stats
    assert stats.success.count == 6
    assert stats.fail.count == 1  # message 5 reached the model; message 3 never did


async def test_stream_beyond_the_window_keeps_order(service: InferenceService) -> None:
    items = [i for i in range(150) if i not in (3, 5)]
    results = [r async for r in service.stream(messages(items), convert)]
    assert [r.source for r in results] == items
    assert all(r.error is None for r in results)
    assert [r.response.id for r in results if r.response] == [f"m{i}" for i in items]


async def test_empty_stream(service: InferenceService) -> None:
    assert [r async for r in service.stream(messages([]), convert)] == []
