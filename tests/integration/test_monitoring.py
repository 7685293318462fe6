"""Drift and outlier monitoring on a served model: calm traffic, then a shift, then outliers."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from volley._proto.inference import grpc_service_pb2 as pb

from inproc import running_server
from onnx_models import add_constant, make_model_dir

CONFIG = """backend: "onnxruntime"
max_batch_size: 8
dynamic_batching { }
"""


def request(x: np.ndarray) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="m")
    msg.inputs.add(name="X", datatype="FP32", shape=list(x.shape))
    msg.raw_input_contents.append(x.astype(np.float32).tobytes())
    return msg


def view(port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/v2/models/m/monitoring"
    with urllib.request.urlopen(url, timeout=5) as response:
        doc: dict[str, Any] = json.loads(response.read())
    return doc["versions"][0]


async def wait_rows(port: int, rows: int) -> dict[str, Any]:
    end = time.monotonic() + 15
    while True:
        current = await asyncio.to_thread(view, port)  # the server shares this loop
        if current["rows"] >= rows or time.monotonic() > end:
            return current
        await asyncio.sleep(0.2)


async def test_drift_and_outliers_are_detected(tmp_path: Path) -> None:
    make_model_dir(tmp_path, "m", add_constant(0.0), config=CONFIG)
    rng = np.random.default_rng(0)
    settings = {
        "monitor_sample_rate": 1.0,
        "monitor_reference_rows": 400,
        "monitor_window": 200,
    }
    async with running_server(tmp_path, **settings) as (server, stub, _ch):
        port = server.http_port
        for _ in range(100):  # the reference: the first 400 rows
            await stub.ModelInfer(request(rng.normal(size=(4, 4))))
        for _ in range(50):  # in-distribution traffic: no drift
            await stub.ModelInfer(request(rng.normal(size=(4, 4))))
        calm = await wait_rows(port, 600)
        assert calm["reference"] == "first requests"
        assert calm["inputs"]["X"]["drift"] is False, calm
        for _ in range(60):  # a shifted distribution
            await stub.ModelInfer(request(rng.normal(size=(4, 4)) + 1.5))
        shifted = await wait_rows(port, 840)
        assert shifted["inputs"]["X"]["drift"] is True, shifted
        assert shifted["inputs"]["X"]["psi"] > 0.2
        before = shifted["outliers"]
        for _ in range(5):
            await stub.ModelInfer(request(np.full((1, 4), 25.0)))
        flagged = await wait_rows(port, 845)
        assert flagged["outliers"] >= before + 5
        metrics = server.service.model_snapshots()
        (snap,) = [s for s in metrics if s.stats.name == "m"]
        assert snap.drift is not None and snap.drift["X"] > 0.2
