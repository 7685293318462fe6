"""The audit log: N requests give N records with the right ids, on every sink; a stalled sink
costs the requests nothing and its records are dropped and counted."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from volley._proto.inference import grpc_service_pb2 as pb

from inproc import running_server

N = 12


def simple_request(i: int, datatype: str = "INT32") -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="simple", id=f"req-{i}")
    for name in ("INPUT0", "INPUT1"):
        msg.inputs.add(name=name, datatype=datatype, shape=[1, 16])
        msg.raw_input_contents.append(np.full((1, 16), i, np.int32).tobytes())
    return msg


async def send(stub: Any, count: int = N) -> None:
    metadata = (("x-tenant", "acme"), ("authorization", "secret"))
    await asyncio.gather(
        *(stub.ModelInfer(simple_request(i), metadata=metadata) for i in range(count))
    )


def read_records(directory: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(directory.glob("volley-audit-*.jsonl"))
        for line in path.read_text().splitlines()
    ]


async def test_file_sink_records_every_request(example_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit"
    async with running_server(
        example_repo,
        audit_log="all",
        audit_log_sink=f"file://{out}",
        audit_log_metadata=["x-tenant"],
        audit_log_max_tensor_bytes=32,
    ) as (server, stub, _ch):
        await send(stub)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.ModelInfer(simple_request(99, "FP32"))
    records = read_records(out)
    assert sorted(r["id"] for r in records) == sorted([f"req-{i}" for i in range(N)] + ["req-99"])
    ok = next(r for r in records if r["id"] == "req-3")
    assert ok["status"] == "OK" and ok["model_name"] == "simple" and ok["model_version"] == "1"
    assert ok["metadata"] == {"x-tenant": "acme"}  # only the allow-listed key
    inputs = {t["name"]: t for t in ok["inputs"]}
    assert inputs["INPUT0"]["shape"] == [1, 16] and inputs["INPUT0"]["truncated"] is True
    assert inputs["INPUT0"]["data"] == [3] * 8  # 32 bytes of INT32
    outputs = {t["name"]: t for t in ok["outputs"]}
    assert outputs["OUTPUT0"]["data"][:2] == [6, 6]  # INPUT0 + INPUT1
    failed = next(r for r in records if r["id"] == "req-99")
    assert failed["status"] == "INVALID_ARGUMENT" and "data-type" in failed["error"]
    assert "outputs" not in failed or failed["outputs"] == []
    assert server.manager.stats.audit_counts["written"] == N + 1


class Receiver:
    """A loopback HTTP server collecting CloudEvents; ``delay`` stalls every POST."""

    def __init__(self, delay: float = 0.0) -> None:
        self.events: list[tuple[dict[str, str], dict[str, Any]]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(delay)
                owner.events.append((dict(self.headers.items()), json.loads(body)))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = False  # server_close joins the handlers, closing sockets
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_cloudevents_over_http(example_repo: Path) -> None:
    receiver = Receiver()
    try:
        async with running_server(example_repo, audit_log="all", audit_log_sink=receiver.url) as (
            _,
            stub,
            _ch,
        ):
            await send(stub)
    finally:
        receiver.close()
    kinds: dict[str, set[str]] = {}
    for headers, body in receiver.events:
        lowered = {k.lower(): v for k, v in headers.items()}
        assert lowered["ce-specversion"] == "1.0"
        assert lowered["content-type"] == "application/json"
        kinds.setdefault(lowered["ce-id"], set()).add(lowered["ce-type"])
        assert body["model_name"] == "simple"
    assert set(kinds) == {f"req-{i}" for i in range(N)}
    for types in kinds.values():
        assert types == {"org.kserve.inference.request", "org.kserve.inference.response"}


async def test_a_stalled_sink_costs_the_requests_nothing(example_repo: Path) -> None:
    receiver = Receiver(delay=2.0)
    try:
        async with running_server(
            example_repo,
            audit_log="request",
            audit_log_sink=receiver.url,
            audit_log_queue_size=4,
        ) as (server, stub, _ch):
            started = time.monotonic()
            for i in range(40):
                await stub.ModelInfer(simple_request(i))
            elapsed = time.monotonic() - started
            counts = dict(server.manager.stats.audit_counts)
    finally:
        receiver.close()
    assert elapsed < 2.0, elapsed  # 40 requests never waited for the 2 s sink
    assert counts["dropped"] >= 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(shutil.which("nats-server") is None, reason="needs the nats-server binary")
async def test_nats_sink(example_repo: Path, tmp_path: Path) -> None:
    import nats

    port = _free_port()
    proc = subprocess.Popen(
        ["nats-server", "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # wait until it listens, with plain sockets
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nats-server did not start"
                await asyncio.sleep(0.1)
        client = await nats.connect(f"nats://127.0.0.1:{port}", connect_timeout=5)
        received: list[dict[str, Any]] = []
        sub = await client.subscribe("audit.simple")
        async with running_server(
            example_repo,
            audit_log="response",
            audit_log_sink=f"nats://127.0.0.1:{port}/audit.simple",
        ) as (_, stub, _ch):
            await send(stub)
            end = time.monotonic() + 10
            while len(received) < N and time.monotonic() < end:
                try:
                    msg = await sub.next_msg(timeout=1)
                except Exception:
                    continue
                received.append(json.loads(msg.data))
        await client.close()
    finally:
        proc.terminate()
        proc.wait(10)
    assert sorted(r["id"] for r in received) == sorted(f"req-{i}" for i in range(N))
    assert all("outputs" in r and "inputs" not in r for r in received)
