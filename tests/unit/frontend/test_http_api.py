"""Routing of the v2 REST API over a fake service: paths, methods, codes, bodies (no sockets)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from volley._proto.inference import model_config_pb2 as mc
from volley.errors import InvalidArgument, NotFound, Unavailable
from volley.frontend.http.api import HttpApi, Reply
from volley.frontend.http.boundary import BodyTooLarge
from volley.serving.shm import SharedMemory
from volley.serving.types import (
    IndexEntry,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    OutputTensor,
    ServerMetadata,
    TensorMetadata,
)
from volley.telemetry.stats import ModelStats
from volley.telemetry.tracing import TraceConfig, Tracing


class FakeService:
    """The parts of ``InferenceService`` the REST API calls."""

    def __init__(self) -> None:
        self.live = True
        self.ready = True
        self.header_keys: frozenset[str] = frozenset()
        self.requests: list[InferenceRequest] = []
        self.loaded: list[tuple[str, dict[str, Any]]] = []
        self.unloaded: list[str] = []
        self.fail: BaseException | None = None
        self.tracing = Tracing(TraceConfig())
        self.shm = SharedMemory()

    def server_ready(self) -> bool:
        return self.ready

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata("volley", "1.0", ("binary_tensor_data",))

    def _known(self, name: str) -> None:
        if name != "m":
            raise NotFound(f"Request for unknown model: '{name}' is not found")

    def model_ready(self, name: str, version: str) -> bool:
        self._known(name)
        if version == "2":
            raise Unavailable("not ready")
        return True

    def model_metadata(self, name: str, version: str) -> ModelMetadata:
        self._known(name)
        x = TensorMetadata("X", "INT32", [-1, 2])
        return ModelMetadata(name, [version or "1"], "onnxruntime_onnx", [x], [x])

    def model_config(self, name: str, version: str) -> mc.ModelConfig:
        self._known(name)
        return mc.ModelConfig(name=name, max_batch_size=4)

    def statistics(self, name: str, version: str) -> list[ModelStats]:
        if name and name != "m":
            raise InvalidArgument(f"requested model '{name}' is not available")
        return [ModelStats("m", 1)]

    def repository_index(self, ready_only: bool) -> list[IndexEntry]:
        return [IndexEntry("m", "1", "READY")] if ready_only else [IndexEntry("m"), IndexEntry("n")]

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        self.requests.append(request)
        if self.fail is not None:
            raise self.fail
        self._known(request.model_name)
        x = request.inputs[0]
        array = np.frombuffer(x.raw, np.int32) if x.raw is not None else np.asarray(x.values)
        out = OutputTensor("Y", "INT32", (array * 2).astype(np.int32).reshape(x.shape))
        return InferenceResponse(request.model_name, "1", request.id, [out])

    async def load(self, name: str, parameters: dict[str, Any]) -> None:
        self.loaded.append((name, dict(parameters)))

    async def unload(self, name: str) -> None:
        self.unloaded.append(name)


@pytest.fixture
def service() -> FakeService:
    return FakeService()


def body_of(data: bytes) -> Callable[[int], Awaitable[bytes]]:
    async def read(limit: int) -> bytes:
        if len(data) > limit:
            raise BodyTooLarge("too large")
        return data

    return read


async def call(
    service: FakeService,
    method: str,
    path: str,
    body: bytes | dict[str, Any] = b"",
    headers: dict[str, str] | None = None,
    max_body: int = 1 << 20,
) -> Reply:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    api = HttpApi(service, max_body)  # type: ignore[arg-type]
    return await api.handle(method, path, headers or {}, body_of(data))


def error(reply: Reply) -> str:
    assert reply.headers["content-type"] == "application/json"
    message: str = json.loads(reply.body)["error"]
    return message


async def test_health(service: FakeService) -> None:
    assert (await call(service, "GET", "/v2/health/live")).status == 200
    assert (await call(service, "GET", "/v2/health/ready")).status == 200
    service.live = service.ready = False
    assert (await call(service, "GET", "/v2/health/live")).status == 400
    assert (await call(service, "GET", "/v2/health/ready")).status == 400


async def test_model_ready_is_400_when_not_ready_or_unknown(service: FakeService) -> None:
    assert (await call(service, "GET", "/v2/models/m/ready")).status == 200
    for path in ("/v2/models/m/versions/2/ready", "/v2/models/zz/ready"):
        reply = await call(service, "GET", path)
        assert reply.status == 400 and error(reply) == "Model version not ready"


async def test_metadata_config_stats_and_index(service: FakeService) -> None:
    meta = json.loads((await call(service, "GET", "/v2")).body)
    assert meta == {"name": "volley", "version": "1.0", "extensions": ["binary_tensor_data"]}
    model = json.loads((await call(service, "GET", "/v2/models/m/versions/3")).body)
    assert model["versions"] == ["3"] and model["inputs"][0]["shape"] == [-1, 2]
    config = json.loads((await call(service, "GET", "/v2/models/m/config")).body)
    assert config["max_batch_size"] == 4
    for path in ("/v2/models/stats", "/v2/models/m/stats", "/v2/models/m/versions/1/stats"):
        stats = json.loads((await call(service, "GET", path)).body)
        assert stats["model_stats"][0]["name"] == "m"
    reply = await call(service, "GET", "/v2/models/zz/stats")
    assert reply.status == 400 and "not available" in error(reply)
    index = json.loads((await call(service, "POST", "/v2/repository/index")).body)
    assert index == [{"name": "m"}, {"name": "n"}]
    index = json.loads((await call(service, "POST", "/v2/repository/index", {"ready": True})).body)
    assert index == [{"name": "m", "version": "1", "state": "READY"}]


async def test_unknown_model_is_404_with_tritons_message(service: FakeService) -> None:
    reply = await call(service, "GET", "/v2/models/zz")
    assert reply.status == 404
    assert error(reply) == "Request for unknown model: 'zz' is not found"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("GET", "/v2/models", 404),
        ("GET", "/v2/models/m/unknown", 404),
        ("GET", "/v2/health/other", 404),
        ("POST", "/v2", 405),
        ("POST", "/v2/health/live", 405),
        ("GET", "/v2/models/m/infer", 405),
        ("POST", "/v2/models/m/config", 405),
        ("DELETE", "/v2/models/stats", 405),
        ("GET", "/v2/repository/index", 405),
        ("PUT", "/v2/systemsharedmemory/status", 405),
        ("GET", "/v2/systemsharedmemory/region/r/register", 405),
        ("POST", "/v2/cudasharedmemory/region/r/register", 501),
        ("DELETE", "/v2/trace/setting", 405),
        ("PUT", "/v2/logging", 405),
        ("POST", "/v2/models/m/generate", 501),
        ("POST", "/v2/repository/other/index", 501),
    ],
)
async def test_routes_and_methods(
    service: FakeService, method: str, path: str, status: int
) -> None:
    reply = await call(service, method, path)
    assert reply.status == status
    assert error(reply)


async def test_infer_json(service: FakeService) -> None:
    doc = {
        "id": "a",
        "inputs": [{"name": "X", "datatype": "INT32", "shape": [1, 2], "data": [1, 2]}],
    }
    reply = await call(service, "POST", "/v2/models/m/versions/1/infer", doc)
    assert reply.status == 200 and reply.headers == {"content-type": "application/json"}
    out = json.loads(reply.body)
    assert out["id"] == "a" and out["outputs"][0]["data"] == [2, 4]
    assert service.requests[0].model_version == "1"


async def test_infer_keeps_the_headers_the_service_asks_for(service: FakeService) -> None:
    service.header_keys = frozenset({"x-tenant", "x-absent"})
    doc = {"inputs": [{"name": "X", "datatype": "INT32", "shape": [1], "data": [1]}]}
    headers = {"x-tenant": "blue", "x-other": "no"}
    assert (await call(service, "POST", "/v2/models/m/infer", doc, headers)).status == 200
    assert service.requests[0].headers == {"x-tenant": "blue"}


async def test_infer_binary_in_and_out(service: FakeService) -> None:
    x = np.array([[3, 4]], np.int32)
    doc = {
        "inputs": [
            {"name": "X", "datatype": "INT32", "shape": [1, 2],
             "parameters": {"binary_data_size": 8}}
        ],
        "parameters": {"binary_data_output": True},
    }  # fmt: skip
    header = json.dumps(doc).encode()
    reply = await call(
        service,
        "POST",
        "/v2/models/m/infer",
        header + x.tobytes(),
        {"inference-header-content-length": str(len(header))},
    )
    assert reply.status == 200
    length = int(reply.headers["inference-header-content-length"])
    out = json.loads(reply.body[:length])
    assert out["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert np.frombuffer(reply.body[length:], np.int32).tolist() == [6, 8]


async def test_infer_compressed_both_ways(service: FakeService) -> None:
    data = list(range(1000))
    doc = {"inputs": [{"name": "X", "datatype": "INT32", "shape": [1000], "data": data}]}
    reply = await call(
        service,
        "POST",
        "/v2/models/m/infer",
        gzip.compress(json.dumps(doc).encode()),
        {"content-encoding": "gzip", "accept-encoding": "gzip"},
    )
    assert reply.status == 200 and reply.headers["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(reply.body))["outputs"][0]["data"] == [2 * v for v in data]


async def test_small_responses_are_not_compressed(service: FakeService) -> None:
    doc = {"inputs": [{"name": "X", "datatype": "INT32", "shape": [2], "data": [1, 2]}]}
    reply = await call(service, "POST", "/v2/models/m/infer", doc, {"accept-encoding": "gzip"})
    assert reply.status == 200 and "content-encoding" not in reply.headers
    assert json.loads(reply.body)["outputs"][0]["data"] == [2, 4]


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b"{bad", {}, 400, "failed to parse the request JSON buffer"),
        (b"\xff\xfe", {}, 400, "failed to parse the request JSON buffer"),
        (b"[" * 900, {}, 400, "failed to parse the request JSON buffer"),
        (b"", {}, 400, "failed to parse the request JSON buffer"),
        (b"{}", {"inference-header-content-length": "x"}, 400, "Unable to parse"),
        (b"{}", {"inference-header-content-length": "9"}, 400, "larger than the request body"),
        (b"{}", {"inference-header-content-length": "0"}, 501, "raw input bytes"),
        (b"{}", {"content-encoding": "gzip"}, 400, "not valid gzip data"),
        (b"{}", {"content-encoding": "zstd"}, 501, "unsupported Content-Encoding"),
        (b"x" * 2000, {}, 413, "too large"),
    ],
)
async def test_malformed_infer_requests_get_clear_errors(
    service: FakeService, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    reply = await call(service, "POST", "/v2/models/m/infer", body, headers, max_body=1000)
    assert reply.status == status
    assert message in error(reply)
    assert not service.requests


async def test_service_errors_meet_the_boundary(
    service: FakeService, caplog: pytest.LogCaptureFixture
) -> None:
    doc = {"inputs": [{"name": "X", "datatype": "INT32", "shape": [1], "data": [1]}]}
    reply = await call(service, "POST", "/v2/models/zz/infer", doc)
    assert reply.status == 404
    service.fail = Unavailable("queue full")
    reply = await call(service, "POST", "/v2/models/m/infer", doc)
    assert (reply.status, error(reply)) == (503, "queue full")
    service.fail = ZeroDivisionError("internal detail")
    with caplog.at_level("ERROR", logger="volley.frontend"):
        reply = await call(service, "POST", "/v2/models/m/infer", doc)
    assert (reply.status, error(reply)) == (500, "internal error")
    assert "ZeroDivisionError" in caplog.text


async def test_load_and_unload(service: FakeService) -> None:
    config = json.dumps({"max_batch_size": 2})
    reply = await call(
        service, "POST", "/v2/repository/models/m/load", {"parameters": {"config": config}}
    )
    assert reply.status == 200
    assert (await call(service, "POST", "/v2/repository/models/m/load")).status == 200
    reply = await call(
        service,
        "POST",
        "/v2/repository/models/m/unload",
        {"parameters": {"unload_dependents": True}},
    )
    assert reply.status == 200
    assert service.loaded == [("m", {"config": config}), ("m", {})]
    assert service.unloaded == ["m"]
    reply = await call(service, "POST", "/v2/repository/models/m/load", {"parameters": {"k": 1}})
    assert reply.status == 400 and "must be a string" in error(reply)
    reply = await call(service, "POST", "/v2/repository/models/m/load", b"[1]")
    assert reply.status == 400 and "JSON object" in error(reply)
    reply = await call(
        service, "POST", "/v2/repository/models/m/unload", {"parameters": {"unload_dependents": 1}}
    )
    assert reply.status == 400


async def test_deeply_nested_json_is_a_client_error(service: FakeService) -> None:
    reply = await call(service, "POST", "/v2/models/m/infer", b"[" * 100_000)
    assert reply.status == 400 and "failed to parse" in error(reply)
