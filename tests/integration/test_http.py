"""The KServe v2 REST frontend on a real server (127.0.0.1, free ports) beside gRPC."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from volley._proto.inference import grpc_service_pb2 as pb

from inproc import running_server
from onnx_models import write_matmul_chain

Json = dict[str, Any]


class Http:
    """A small REST client: JSON or binary-extension bodies, status and parsed reply."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{port}"

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.base + path) as reply:
            body = await reply.read()
            return reply.status, json.loads(body) if body else None

    async def post(
        self, path: str, doc: Any = None, binary: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, Any, bytes]:
        """POST ``doc`` (plus ``binary`` after it); returns status, JSON header, binary part."""
        headers = dict(headers or {})
        data = json.dumps(doc).encode() if doc is not None else b""
        if binary:
            headers["Inference-Header-Content-Length"] = str(len(data))
        async with self.session.post(self.base + path, data=data + binary, headers=headers) as r:
            body = await r.read()
            length = r.headers.get("Inference-Header-Content-Length")
            cut = int(length) if length is not None else len(body)
            return r.status, json.loads(body[:cut]) if cut else None, body[cut:]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def binary_tensor(name: str, array: np.ndarray, datatype: str) -> Json:
    return {
        "name": name,
        "datatype": datatype,
        "shape": list(array.shape),
        "parameters": {"binary_data_size": array.nbytes},
    }


def outputs_of(doc: Json, blob: bytes, dtype: Any) -> dict[str, np.ndarray]:
    """Every output of a reply, JSON or binary, as numpy arrays."""
    out, offset = {}, 0
    for o in doc["outputs"]:
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is None:
            out[o["name"]] = np.array(o["data"], dtype).reshape(o["shape"])
        else:
            out[o["name"]] = np.frombuffer(blob[offset : offset + size], dtype).reshape(o["shape"])
            offset += size
    assert offset == len(blob)
    return out


async def test_health_metadata_config_statistics_and_index(
    example_repo: Path, session: aiohttp.ClientSession
) -> None:
    async with running_server(example_repo) as (server, stub, _ch):
        http = Http(session, server.http_port)
        assert server.http_port and server.http_port != server.port
        assert (await http.get("/v2/health/live"))[0] == 200
        assert (await http.get("/v2/health/ready"))[0] == 200
        status, meta = await http.get("/v2")
        assert status == 200 and meta["name"] == "volley"
        assert "binary_tensor_data" in meta["extensions"]
        grpc_meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="simple"))
        for path in ("/v2/models/simple", "/v2/models/simple/versions/1"):
            status, model = await http.get(path)
            assert status == 200
            assert model["versions"] == list(grpc_meta.versions) == ["1"]
            assert model["inputs"] == [
                {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                for t in grpc_meta.inputs
            ]
        assert (await http.get("/v2/models/simple/ready"))[0] == 200
        assert (await http.get("/v2/models/simple/versions/1/ready"))[0] == 200
        assert (await http.get("/v2/models/simple/versions/9/ready"))[0] == 400
        assert (await http.get("/v2/models/nope/ready"))[0] == 400
        status, config = await http.get("/v2/models/simple/config")
        assert status == 200 and config["name"] == "simple" and config["max_batch_size"] == 4
        assert config["input"][0]["dims"] == [16]
        assert (await http.get("/v2/models/simple/versions/1/config"))[1] == config
        status, index = (await http.post("/v2/repository/index"))[:2]
        assert status == 200
        assert {row["name"] for row in index} == {"dense_classifier", "simple", "text_features"}
        assert all(row["state"] == "READY" for row in index)
        status, stats = await http.get("/v2/models/stats")
        assert status == 200 and len(stats["model_stats"]) == 3
        status, stats = await http.get("/v2/models/simple/versions/1/stats")
        assert status == 200 and stats["model_stats"][0]["inference_stats"]["success"]["count"] == 0


async def test_infer_json_and_binary_match_grpc(
    example_repo: Path, session: aiohttp.ClientSession
) -> None:
    x0 = np.arange(32, dtype=np.int32).reshape(2, 16)
    x1 = np.full((2, 16), 3, np.int32)
    async with running_server(example_repo) as (server, stub, _ch):
        http = Http(session, server.http_port)
        request = pb.ModelInferRequest(model_name="simple")
        for name, x in (("INPUT0", x0), ("INPUT1", x1)):
            request.inputs.add(name=name, datatype="INT32", shape=x.shape)
            request.raw_input_contents.append(x.tobytes())
        grpc_reply = await stub.ModelInfer(request)
        expected = {
            o.name: np.frombuffer(raw, np.int32).reshape(2, 16)
            for o, raw in zip(grpc_reply.outputs, grpc_reply.raw_output_contents, strict=True)
        }
        np.testing.assert_array_equal(expected["OUTPUT0"], x0 + x1)

        # JSON in (nested and flat), JSON out
        doc = {
            "id": "j1",
            "inputs": [
                {"name": "INPUT0", "datatype": "INT32", "shape": [2, 16], "data": x0.tolist()},
                {"name": "INPUT1", "datatype": "INT32", "shape": [2, 16], "data": x1.ravel().tolist()},
            ],
        }  # fmt: skip
        status, reply, blob = await http.post("/v2/models/simple/infer", doc)
        assert status == 200, reply
        assert (reply["id"], reply["model_name"], reply["model_version"]) == ("j1", "simple", "1")
        assert blob == b""
        for name, got in outputs_of(reply, blob, np.int32).items():
            np.testing.assert_array_equal(got, expected[name])

        # binary in, binary out (binary_data_output), on a named version
        doc = {
            "inputs": [binary_tensor("INPUT0", x0, "INT32"), binary_tensor("INPUT1", x1, "INT32")],
            "parameters": {"binary_data_output": True},
        }
        status, reply, blob = await http.post(
            "/v2/models/simple/versions/1/infer", doc, x0.tobytes() + x1.tobytes()
        )
        assert status == 200, reply
        assert "id" not in reply and len(blob) == 2 * x0.nbytes
        for name, got in outputs_of(reply, blob, np.int32).items():
            np.testing.assert_array_equal(got, expected[name])

        # binary in, one output asked for as binary and one as JSON, in the order asked
        doc["outputs"] = [
            {"name": "OUTPUT1", "parameters": {"binary_data": True}},
            {"name": "OUTPUT0"},
        ]
        status, reply, blob = await http.post(
            "/v2/models/simple/infer", doc, x0.tobytes() + x1.tobytes()
        )
        assert status == 200, reply
        assert [o["name"] for o in reply["outputs"]] == ["OUTPUT1", "OUTPUT0"]
        assert "data" in reply["outputs"][1] and len(blob) == x0.nbytes
        for name, got in outputs_of(reply, blob, np.int32).items():
            np.testing.assert_array_equal(got, expected[name])

        status, stats = await http.get("/v2/models/simple/stats")
        assert stats["model_stats"][0]["inference_stats"]["success"]["count"] == 4


async def test_bytes_tensors_as_json_strings_and_binary(
    example_repo: Path, session: aiohttp.ClientSession
) -> None:
    async with running_server(example_repo) as (server, _stub, _ch):
        http = Http(session, server.http_port)
        ids = np.array([1, 2, 3], np.int64)
        doc = {
            "inputs": [
                {"name": "TEXT", "datatype": "BYTES", "shape": [2], "data": ["Hello", "WöRLD"]},
                {"name": "IDS", "datatype": "INT64", "shape": [3], "data": ids.tolist()},
            ]
        }
        status, reply, _ = await http.post("/v2/models/text_features/infer", doc)
        assert status == 200, reply
        by_name = {o["name"]: o for o in reply["outputs"]}
        assert by_name["TEXT_LOWER"]["data"] == ["hello", "wörld"]
        assert by_name["IDS_DOUBLED"]["data"] == [2, 4, 6]
        assert by_name["IDS_SUM"]["data"] == [6]

        texts = [b"ABC", b""]
        raw = b"".join(len(t).to_bytes(4, "little") + t for t in texts)
        doc = {
            "inputs": [
                {"name": "TEXT", "datatype": "BYTES", "shape": [2],
                 "parameters": {"binary_data_size": len(raw)}},
                binary_tensor("IDS", ids, "INT64"),
            ],
            "outputs": [{"name": "TEXT_LOWER", "parameters": {"binary_data": True}}],
        }  # fmt: skip
        status, reply, blob = await http.post(
            "/v2/models/text_features/infer", doc, raw + ids.tobytes()
        )
        assert status == 200, reply
        assert reply["outputs"][0]["parameters"]["binary_data_size"] == len(raw)
        assert blob == b"\x03\x00\x00\x00abc\x00\x00\x00\x00"


ERRORS: list[tuple[str, Any, bytes, dict[str, str], int, str]] = [
    ("/v2/models/nope/infer", {"inputs": []}, b"", {}, 404, "unknown model: 'nope'"),
    ("/v2/models/simple/versions/7/infer", {"inputs": []}, b"", {}, 404, "version 7"),
    ("/v2/models/simple/versions/x/infer", {"inputs": []}, b"", {}, 400, "version string"),
    ("/v2/models/simple/infer", {"inputs": []}, b"", {}, 400, "expected 2 inputs"),
    (
        "/v2/models/simple/infer",
        {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": [0] * 16},
                    {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [0] * 16}]},
        b"", {}, 400, "data-type is 'FP32'",
    ),
    (
        "/v2/models/simple/infer",
        {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 8], "data": [0] * 8},
                    {"name": "INPUT1", "datatype": "INT32", "shape": [1, 8], "data": [0] * 8}]},
        b"", {}, 400, "unexpected shape for input 'INPUT0'",
    ),
    (
        "/v2/models/simple/infer",
        {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": [0] * 15},
                    {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [0] * 16}]},
        b"", {}, 400, "expected 16 elements",
    ),
    (
        "/v2/models/simple/infer",
        {"inputs": [binary_tensor("INPUT0", np.zeros((1, 16), np.int32), "INT32"),
                    binary_tensor("INPUT1", np.zeros((1, 16), np.int32), "INT32")]},
        b"\0" * 100, {}, 400, "expecting 28 additional bytes",
    ),
    (
        "/v2/models/simple/infer",
        {"inputs": [binary_tensor("INPUT0", np.zeros((1, 16), np.int32), "INT32"),
                    binary_tensor("INPUT1", np.zeros((1, 16), np.int32), "INT32")],
         "outputs": [{"name": "NOPE"}]},
        b"\0" * 128, {}, 400, "unexpected inference output 'NOPE'",
    ),
    ("/v2/models/simple/infer", None, b"", {}, 400, "failed to parse the request JSON"),
    (
        "/v2/models/simple/infer", {"inputs": []}, b"",
        {"Inference-Header-Content-Length": "abc"}, 400, "Unable to parse",
    ),
    ("/v2/models/simple/infer", {"inputs": []}, b"", {"Content-Encoding": "gzip"}, 400, "gzip"),
    ("/v2/repository/models/simple/load", {}, b"", {}, 503, "explicit model load"),
    ("/v2/cudasharedmemory/region/r/register", {}, b"", {}, 501, "CUDA shared memory"),
    (
        "/v2/systemsharedmemory/region/r/register", {"key": "/volley_no_such_object",
        "byte_size": 8}, b"", {}, 400, "unable to open shared memory region 'r'",
    ),
    ("/v2/models/simple/stats", None, b"", {}, 405, "Method Not Allowed"),
    ("/v2/nowhere", None, b"", {}, 404, "Not Found"),
]  # fmt: skip


async def test_errors_have_tritons_shape_and_codes(
    example_repo: Path, session: aiohttp.ClientSession
) -> None:
    async with running_server(example_repo) as (server, _stub, _ch):
        http = Http(session, server.http_port)
        for path, doc, binary, headers, status, message in ERRORS:
            got, reply, _ = await http.post(path, doc, binary, headers)
            assert got == status, (path, reply)
            assert set(reply) == {"error"} and message in reply["error"], (path, reply)
        assert (await http.get("/v2/health/live"))[0] == 200  # the server is unharmed


async def test_body_limit_with_and_without_content_length(
    example_repo: Path, session: aiohttp.ClientSession
) -> None:
    async with running_server(example_repo) as (server, _stub, _ch):
        server._http._api._max_body = 1000  # type: ignore[union-attr]
        http = Http(session, server.http_port)
        status, reply, _ = await http.post("/v2/models/simple/infer", {"pad": "x" * 2000})
        assert status == 413 and "exceeds the limit of 1000 bytes" in reply["error"]

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(30):
                yield b" " * 100

        url = http.base + "/v2/models/simple/infer"
        async with session.post(url, data=chunks()) as r:  # chunked: no Content-Length
            assert r.status == 413 and "limit" in (await r.json())["error"]
        assert (await http.get("/v2/health/live"))[0] == 200


async def test_explicit_load_and_unload(example_repo: Path, session: aiohttp.ClientSession) -> None:
    async with running_server(example_repo, model_control_mode="explicit") as (server, _s, _c):
        http = Http(session, server.http_port)
        assert (await http.get("/v2/models/simple/ready"))[0] == 400
        status, index, _ = await http.post("/v2/repository/index", {"ready": False})
        assert {"name": "simple"} in index
        assert (await http.post("/v2/repository/models/simple/load"))[0] == 200
        assert (await http.get("/v2/models/simple/ready"))[0] == 200
        config = json.dumps({"max_batch_size": 2})
        status, reply, _ = await http.post(
            "/v2/repository/models/simple/load", {"parameters": {"config": config}}
        )
        assert status == 200, reply
        assert (await http.get("/v2/models/simple/config"))[1]["max_batch_size"] == 2
        status, reply, _ = await http.post(
            "/v2/repository/models/simple/unload", {"parameters": {"unload_dependents": False}}
        )
        assert status == 200, reply
        assert (await http.get("/v2/models/simple/ready"))[0] == 400
        status, index, _ = await http.post("/v2/repository/index", {"ready": True})
        assert index == []


WIDTH = 64
BATCHING = """
backend: "onnxruntime"
max_batch_size: 8
dynamic_batching {
  preferred_batch_size: [ 2 ]
  max_queue_delay_microseconds: 3000000
  default_queue_policy { allow_timeout_override: true }
}
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


def dense_repository(root: Path) -> Path:
    weight = np.eye(WIDTH, dtype=np.float32) * 2
    write_matmul_chain(root / "dense", weight, 1, "b")
    (root / "dense" / "config.pbtxt").write_text(BATCHING)
    return root


async def test_a_grpc_and_an_http_request_share_one_batch(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    x = np.ones((1, WIDTH), np.float32)
    async with running_server(dense_repository(tmp_path)) as (server, stub, _ch):
        http = Http(session, server.http_port)
        grpc_request = pb.ModelInferRequest(model_name="dense")
        grpc_request.inputs.add(name="X", datatype="FP32", shape=x.shape)
        grpc_request.raw_input_contents.append(x.tobytes())
        doc = {
            "inputs": [binary_tensor("X", x, "FP32")],
            "parameters": {"binary_data_output": True},
        }
        # neither completes alone (3 s queue delay): preferred size 2 = both, in one execution
        grpc_reply, (status, reply, blob) = await asyncio.wait_for(
            asyncio.gather(
                stub.ModelInfer(grpc_request),
                http.post("/v2/models/dense/infer", doc, x.tobytes()),
            ),
            timeout=2.5,
        )
        assert status == 200, reply
        np.testing.assert_array_equal(np.frombuffer(blob, np.float32), 2 * x.ravel())
        np.testing.assert_array_equal(
            np.frombuffer(grpc_reply.raw_output_contents[0], np.float32), 2 * x.ravel()
        )
        stats = (await stub.ModelStatistics(pb.ModelStatisticsRequest(name="dense"))).model_stats[0]
        assert stats.inference_count == 2
        assert stats.execution_count == 1 < stats.inference_count
        assert [b.batch_size for b in stats.batch_stats] == [2]


async def test_refusals_and_draining_map_to_http_codes(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    x = np.ones((1, WIDTH), np.float32)
    doc = {"inputs": [binary_tensor("X", x, "FP32")]}
    timed = {**doc, "parameters": {"timeout": 300_000}}
    async with running_server(dense_repository(tmp_path), max_inflight_requests=1) as (
        server,
        _stub,
        _ch,
    ):
        http = Http(session, server.http_port)
        # it waits in the queue for a partner that never comes, until its own timeout is near
        waiting = asyncio.ensure_future(http.post("/v2/models/dense/infer", timed, x.tobytes()))
        await asyncio.sleep(0.1)
        status, reply, _ = await http.post("/v2/models/dense/infer", doc, x.tobytes())
        assert status == 429 and "limit of 1 requests in flight" in reply["error"]
        assert (await waiting)[0] == 200
        server.service.draining = True
        status, reply, _ = await http.post("/v2/models/dense/infer", doc, x.tobytes())
        assert status == 503 and "shutting down" in reply["error"]
        assert (await http.get("/v2/health/ready"))[0] == 400
        server.service.draining = False


async def test_http_can_be_turned_off(example_repo: Path) -> None:
    async with running_server(example_repo, allow_http=False) as (server, _stub, _ch):
        assert server.http_port == 0
