"""Traces arrive at real OTLP receivers (gRPC and HTTP) on loopback, continuing the caller's
trace; TraceSetting and LogSettings answer with the settings in force and change them."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from volley._proto.inference import grpc_service_pb2 as pb

from inproc import running_server
from onnx_models import add_constant, make_model_dir

CONFIG = """backend: "onnxruntime"
max_batch_size: 16
dynamic_batching { max_queue_delay_microseconds: 100000 preferred_batch_size: [8] }
"""


class Collected:
    """Spans received by a test receiver."""

    def __init__(self) -> None:
        self.spans: list[trace_pb2.Span] = []
        self.services: set[str] = set()

    def add(self, request: otlp.ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            for attr in resource_spans.resource.attributes:
                if attr.key == "service.name":
                    self.services.add(attr.value.string_value)
            for scope in resource_spans.scope_spans:
                self.spans.extend(scope.spans)

    def named(self, name: str) -> list[trace_pb2.Span]:
        return [s for s in self.spans if s.name == name]


class _Receiver(otlp_grpc.TraceServiceServicer):
    def __init__(self, collected: Collected) -> None:
        self.collected = collected

    async def Export(
        self, request: otlp.ExportTraceServiceRequest, context: Any
    ) -> otlp.ExportTraceServiceResponse:
        self.collected.add(request)
        return otlp.ExportTraceServiceResponse()


@asynccontextmanager
async def grpc_receiver() -> AsyncIterator[tuple[str, Collected]]:
    collected = Collected()
    server = grpc.aio.server()
    otlp_grpc.add_TraceServiceServicer_to_server(_Receiver(collected), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"http://127.0.0.1:{port}", collected
    finally:
        await server.stop(0)


@asynccontextmanager
async def http_receiver() -> AsyncIterator[tuple[str, Collected]]:
    collected = Collected()

    async def export(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        collected.add(otlp.ExportTraceServiceRequest.FromString(await request.read()))
        body = otlp.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", export)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", collected
    finally:
        await runner.cleanup()


def attrs(span: trace_pb2.Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in span.attributes:
        kind = a.value.WhichOneof("value")
        out[a.key] = getattr(a.value, kind) if kind else None
    return out


def request(i: int, name: str = "X") -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="m", id=f"req-{i}")
    msg.inputs.add(name=name, datatype="FP32", shape=[1, 4])
    msg.raw_input_contents.append(np.full((1, 4), i, np.float32).tobytes())
    return msg


def parent(i: int, flags: str = "01") -> tuple[str, str, str]:
    trace_id = f"{i + 1:032x}"
    span_id = f"{i + 1:016x}"
    return trace_id, span_id, f"00-{trace_id}-{span_id}-{flags}"


async def wait_for(collected: Collected, name: str, count: int) -> list[trace_pb2.Span]:
    for _ in range(200):
        if len(collected.named(name)) >= count:
            break
        await asyncio.sleep(0.05)
    return collected.named(name)


async def test_spans_reach_an_otlp_grpc_receiver(tmp_path: Path, grpc_transport: str) -> None:
    make_model_dir(tmp_path, "m", add_constant(1.0), config=CONFIG)
    async with grpc_receiver() as (endpoint, collected):
        settings = {
            "trace_exporter": "otlp",
            "trace_protocol": "grpc",
            "trace_endpoint": endpoint,
            "trace_sample_ratio": 0.0,
            "trace_service_name": "scoring",
        }
        async with running_server(tmp_path, **settings) as (server, stub, _ch):
            calls = [
                stub.ModelInfer(request(i), metadata=(("traceparent", parent(i)[2]),))
                for i in range(8)
            ]
            unsampled = stub.ModelInfer(
                request(50), metadata=(("traceparent", parent(50, "00")[2]),)
            )
            untraced = stub.ModelInfer(request(60))
            await asyncio.gather(*calls, unsampled, untraced)
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await stub.ModelInfer(
                    request(70, "NOPE"), metadata=(("traceparent", parent(70)[2]),)
                )
            assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert await asyncio.to_thread(server.service.tracing.flush)
            servers = await wait_for(collected, "ModelInfer", 9)
            batches = await wait_for(collected, "batch", 1)
            queues = collected.named("queue")

    assert collected.services == {"scoring"}
    by_trace = {s.trace_id.hex(): s for s in servers}
    assert len(servers) == 9  # 8 sampled, 1 failed; the unsampled and untraced are absent
    for i in range(8):
        trace_id, span_id, _ = parent(i)
        span = by_trace[trace_id]
        assert span.parent_span_id.hex() == span_id
        assert span.kind == trace_pb2.Span.SPAN_KIND_SERVER
        a = attrs(span)
        assert a["volley.model"] == "m" and a["volley.model_version"] == "1"
        assert a["volley.request_id"] == f"req-{i}"
        assert a["volley.transport"] == f"grpc-{grpc_transport}"
        assert span.status.code != trace_pb2.Status.STATUS_CODE_ERROR
    assert parent(50)[0] not in by_trace
    failed = by_trace[parent(70)[0]]
    assert failed.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert "INVALID_ARGUMENT" in failed.status.message

    sampled = {by_trace[parent(i)[0]].span_id for i in range(8)}
    assert {q.parent_span_id for q in queues} == sampled
    linked = [link.span_id for b in batches for link in b.links]
    assert sorted(linked) == sorted(sampled)
    # a batch also counts the untraced requests it served (the unsampled and untraced ones)
    assert 8 <= sum(attrs(b)["volley.batch_size"] for b in batches) <= 10
    assert all(attrs(b)["volley.batch_size"] >= len(b.links) for b in batches)
    assert max(len(b.links) for b in batches) >= 2
    for b in batches:
        assert attrs(b)["volley.model"] == "m"
        assert b.parent_span_id in sampled and b.end_time_unix_nano > b.start_time_unix_nano
    for q in queues:
        owner = next(s for s in servers if s.span_id == q.parent_span_id)
        assert owner.start_time_unix_nano <= q.start_time_unix_nano <= q.end_time_unix_nano
        assert q.end_time_unix_nano <= owner.end_time_unix_nano


def _post(url: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=10) as response:
        doc: dict[str, Any] = json.loads(response.read())
    return doc


async def test_spans_reach_an_otlp_http_receiver(tmp_path: Path) -> None:
    make_model_dir(tmp_path, "m", add_constant(1.0), config=CONFIG.replace("100000", "1000"))
    async with http_receiver() as (endpoint, collected):
        settings = {
            "trace_exporter": "otlp",
            "trace_protocol": "http/protobuf",
            "trace_endpoint": endpoint,
        }
        async with running_server(tmp_path, **settings) as (server, stub, _ch):
            trace_id, span_id, header = parent(7)
            doc = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [1] * 4}]}
            url = f"http://127.0.0.1:{server.http_port}/v2/models/m/infer"
            headers = {"traceparent": header, "content-type": "application/json"}
            out = await asyncio.to_thread(_post, url, json.dumps(doc).encode(), headers)
            assert out["outputs"][0]["data"] == [2.0] * 4
            await stub.ModelInfer(request(1))  # no traceparent: sampled at ratio 1, a new trace
            assert await asyncio.to_thread(server.service.tracing.flush)
            servers = await wait_for(collected, "POST /v2/models/{name}/infer", 1)
            grpc_spans = await wait_for(collected, "ModelInfer", 1)
            await wait_for(collected, "batch", 2)

    (rest,) = servers
    assert rest.trace_id.hex() == trace_id and rest.parent_span_id.hex() == span_id
    assert attrs(rest)["volley.transport"] == "http"
    (root,) = grpc_spans
    assert root.parent_span_id == b"" and root.trace_id.hex() != trace_id
    assert collected.services == {"volley"}


async def test_trace_and_log_settings_rpcs(tmp_path: Path) -> None:
    make_model_dir(tmp_path, "m", add_constant(1.0), config=CONFIG)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    async with grpc_receiver() as (endpoint, _collected):
        settings = {"trace_exporter": "otlp", "trace_endpoint": endpoint}
        async with running_server(tmp_path, **settings) as (server, stub, _ch):
            current = await stub.TraceSetting(pb.TraceSettingRequest())
            got = {k: list(v.value) for k, v in current.settings.items()}
            assert got == {
                "trace_level": ["TIMESTAMPS"],
                "trace_rate": ["1"],
                "trace_count": ["-1"],
                "trace_mode": ["opentelemetry"],
            }
            change = pb.TraceSettingRequest(model_name="m")
            change.settings["trace_rate"].value.append("100")
            changed = await stub.TraceSetting(change)
            assert list(changed.settings["trace_rate"].value) == ["100"]
            glob = await stub.TraceSetting(pb.TraceSettingRequest())
            assert list(glob.settings["trace_rate"].value) == ["1"]

            bad = pb.TraceSettingRequest()
            bad.settings["trace_rate"].value.append("often")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.TraceSetting(bad)
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "trace_rate" in (refused.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await stub.TraceSetting(pb.TraceSettingRequest(model_name="nope"))
            assert unknown.value.code() is grpc.StatusCode.NOT_FOUND

            try:
                logs = await stub.LogSettings(pb.LogSettingsRequest())
                assert logs.settings["log_info"].bool_param is True
                assert logs.settings["log_format"].string_param == "text"
                verbose = pb.LogSettingsRequest()
                verbose.settings["log_verbose_level"].uint32_param = 1
                answered = await stub.LogSettings(verbose)
                assert answered.settings["log_verbose_level"].uint32_param == 1
                assert root.level == logging.DEBUG
                wrong = pb.LogSettingsRequest()
                wrong.settings["log_info"].string_param = "yes"
                with pytest.raises(grpc.aio.AioRpcError) as typed:
                    await stub.LogSettings(wrong)
                assert typed.value.code() is grpc.StatusCode.INVALID_ARGUMENT

                base = f"http://127.0.0.1:{server.http_port}"
                rest = await asyncio.to_thread(
                    _post, f"{base}/v2/models/m/trace/setting", b'{"trace_rate": null}', {}
                )
                assert rest["trace_rate"] == "1" and rest["trace_level"] == ["TIMESTAMPS"]
                quiet = await asyncio.to_thread(
                    _post, f"{base}/v2/logging", b'{"log_verbose_level": 0}', {}
                )
                assert quiet["log_verbose_level"] == 0 and root.level == logging.INFO
            finally:
                root.setLevel(level)


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


async def test_request_log_lines_carry_no_tensors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, restore_root_logger: None
) -> None:
    make_model_dir(tmp_path, "m", add_constant(1.0), config=CONFIG.replace("100000", "100"))
    caplog.set_level(logging.INFO, logger="volley.requests")
    async with running_server(tmp_path, log_requests=True) as (_server, stub, _ch):
        await stub.ModelInfer(request(12345))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.ModelInfer(request(2, "NOPE"))
    lines = [r.getMessage() for r in caplog.records if r.name == "volley.requests"]
    assert len(lines) == 2
    assert "model=m version=1 id=req-12345 status=OK" in lines[0]
    assert "status=INVALID_ARGUMENT" in lines[1] and "NOPE" in lines[1]
    assert "12345.0" not in " ".join(lines)


ENSEMBLE = """platform: "ensemble"
max_batch_size: 8
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
ensemble_scheduling { step [
  { model_name: "m" model_version: -1
    input_map { key: "X" value: "IN" } output_map { key: "Y" value: "OUT" } }
] }
"""


async def test_an_ensembles_steps_show_in_its_trace(tmp_path: Path) -> None:
    make_model_dir(tmp_path, "m", add_constant(1.0), config=CONFIG.replace("100000", "1000"))
    make_model_dir(tmp_path, "e", None, config=ENSEMBLE)
    async with grpc_receiver() as (endpoint, collected):
        settings = {"trace_exporter": "otlp", "trace_endpoint": endpoint}
        async with running_server(tmp_path, **settings) as (server, stub, _ch):
            trace_id, span_id, header = parent(42)
            msg = pb.ModelInferRequest(model_name="e", id="ens-1")
            msg.inputs.add(name="IN", datatype="FP32", shape=[1, 4])
            msg.raw_input_contents.append(np.ones((1, 4), np.float32).tobytes())
            reply = await stub.ModelInfer(msg, metadata=(("traceparent", header),))
            assert np.frombuffer(reply.raw_output_contents[0], np.float32).tolist() == [2.0] * 4
            assert await asyncio.to_thread(server.service.tracing.flush)
            (root,) = await wait_for(collected, "ModelInfer", 1)
            batches = await wait_for(collected, "batch", 1)
            queues = collected.named("queue")
    assert root.trace_id.hex() == trace_id and root.parent_span_id.hex() == span_id
    assert attrs(root)["volley.model"] == "e"
    (step,) = [b for b in batches if attrs(b)["volley.model"] == "m"]  # the composing model
    assert step.trace_id.hex() == trace_id
    assert [link.span_id for link in step.links] == [root.span_id]
    assert [q.parent_span_id for q in queues if attrs(q)["volley.model"] == "m"] == [root.span_id]
