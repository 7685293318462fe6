"""Prometheus metrics agree exactly with what happened."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from volley._proto.inference import grpc_service_pb2 as pb

from inproc import running_server

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``GET /metrics`` by its exact name on the wire and its labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    list(text_string_to_metric_families(text))  # the official parser accepts it
    samples = {}
    types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, line
        name, labels, value = match.groups()
        key = tuple(sorted(LABEL.findall(labels or "")))
        samples[(name, key)] = float(value)
    assert types["nv_inference_request_success"] == "counter"
    assert types["volley_request_duration_seconds"] == "histogram"
    return samples


def simple_request(datatype: str = "INT32") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="simple")
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype=datatype, shape=[1, 16])
        request.raw_input_contents.append(np.ones((1, 16), np.int32).tobytes())
    return request


SIMPLE = (("model", "simple"), ("version", "1"))


async def test_counters_and_histograms_agree_with_what_happened(example_repo: Path) -> None:
    async with running_server(example_repo, max_inflight_requests=0) as (server, stub, _ch):
        assert server.metrics_port > 0
        ok, bad_type, bad_shape = 7, 3, 2
        await asyncio.gather(*(stub.ModelInfer(simple_request()) for _ in range(ok)))
        for _ in range(bad_type):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.ModelInfer(simple_request("FP32"))
        for _ in range(bad_shape):
            wrong = simple_request()
            wrong.inputs[0].shape[1] = 15
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.ModelInfer(wrong)
        with pytest.raises(grpc.aio.AioRpcError):  # unknown model: no model to count it
            await stub.ModelInfer(pb.ModelInferRequest(model_name="nope"))
        m = scrape(server.metrics_port)
        assert m[("nv_inference_request_success", SIMPLE)] == ok
        assert m[
            ("nv_inference_request_failure", tuple(sorted((*SIMPLE, ("reason", "OTHER")))))
        ] == (bad_type + bad_shape)
        for reason in ("REJECTED", "CANCELED", "BACKEND"):
            assert (
                m[("nv_inference_request_failure", tuple(sorted((*SIMPLE, ("reason", reason)))))]
                == 0
            )
        assert m[("nv_inference_count", SIMPLE)] == ok
        assert 1 <= m[("nv_inference_exec_count", SIMPLE)] <= ok
        assert m[("volley_request_duration_seconds_count", SIMPLE)] == ok + bad_type + bad_shape
        assert m[("volley_queue_duration_seconds_count", SIMPLE)] == ok
        executions = m[("nv_inference_exec_count", SIMPLE)]
        assert m[("volley_compute_duration_seconds_count", SIMPLE)] == executions
        assert m[("volley_batch_size_count", SIMPLE)] == executions
        assert m[("volley_batch_size_sum", SIMPLE)] == ok
        inf_bucket = m[
            ("volley_request_duration_seconds_bucket", tuple(sorted((("le", "+Inf"), *SIMPLE))))
        ]
        assert inf_bucket == ok + bad_type + bad_shape
        assert m[("nv_inference_pending_request_count", SIMPLE)] == 0
        assert m[("volley_queue_depth", SIMPLE)] == 0
        assert m[("nv_inference_request_duration_us", SIMPLE)] > 0
        assert m[("volley_model_loads_total", (("result", "success"),))] == 3
        transport = server.grpc_transport
        assert m[("volley_transport_info", (("protocol", "grpc"), ("transport", transport)))] == 1
        memory = [
            k for k in m if k[0] == "volley_model_memory_bytes" and ("model", "simple") in k[1]
        ]
        assert memory


async def test_refusals_are_counted_by_reason(example_repo: Path) -> None:
    async with running_server(example_repo, max_inflight_requests=1) as (server, stub, _ch):
        results = await asyncio.gather(
            *(stub.ModelInfer(simple_request()) for _ in range(40)), return_exceptions=True
        )
        refused = sum(isinstance(r, grpc.aio.AioRpcError) for r in results)
        m = scrape(server.metrics_port)
        assert (
            m.get(("volley_rejected_requests_total", (("reason", "inflight_cap"),)), 0) == refused
        )
        assert m[("nv_inference_request_success", SIMPLE)] == 40 - refused


async def test_metrics_can_be_turned_off(example_repo: Path) -> None:
    async with running_server(example_repo, allow_metrics=False) as (server, stub, _ch):
        assert server.metrics_port == 0
        assert (await stub.ServerLive(pb.ServerLiveRequest())).live
