"""Server-side cost of batching and of the Python request path (the batching issue's figures).

Starts ``volley serve`` on 127.0.0.1, drives it with ``volley perf``, and reads the server
process's CPU time from ``/proc/<pid>/stat`` around each window:

* batching efficiency: a 256->1024->1024->16 FP32 model (``--instances``, default 2), one ORT
  thread per instance, requests of 16 rows at concurrency 16; served rows/s / in-process ORT
  rows/s at batch 64 with one thread, measured in this run;
* per-request cost: batch-1 requests at concurrency 64 on the same model: server CPU us/request;
* Python overhead budget: a one-Add model, batch 1, concurrency 1: server CPU us/request, p50.

Run: ``.venv/bin/python bench/server_cost.py``; results go to
``bench/results/server_cost_<instances>inst.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
sys.path.insert(0, str(BENCH))

from machine import describe  # noqa: E402

from server_process import ServerProcess  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def build_repository(root: Path, instances: int = 2, delay_us: int = 2000) -> Path:
    rng = np.random.default_rng(0)
    sizes = [256, 1024, 1024, 16]
    inits, nodes, prev = [], [], "INPUT"
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        out = "OUTPUT" if i == len(sizes) - 2 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Relu" if out != "OUTPUT" else "Identity", [f"m{i}"], [out]))
        prev = out
    _save(
        helper.make_graph(
            nodes,
            "dense",
            [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["b", 256])],
            [helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, ["b", 16])],
            initializer=inits,
        ),
        root / "dense" / "1" / "model.onnx",
    )
    (root / "dense" / "config.pbtxt").write_text(
        'backend: "onnxruntime"\nmax_batch_size: 64\n'
        "dynamic_batching { preferred_batch_size: [ 64 ] "
        f"max_queue_delay_microseconds: {delay_us} }}\n"
        f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n"
        'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n'
        'parameters { key: "inter_op_thread_count" value: { string_value: "1" } }\n'
    )
    one = numpy_helper.from_array(np.ones(16, np.float32), "one")
    _save(
        helper.make_graph(
            [helper.make_node("Add", ["X", "one"], ["Y"])],
            "add",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["b", 16])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["b", 16])],
            initializer=[one],
        ),
        root / "add" / "1" / "model.onnx",
    )
    (root / "add" / "config.pbtxt").write_text(
        'backend: "onnxruntime"\nmax_batch_size: 8\ndynamic_batching { }\n'
        "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
        'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n'
    )
    return root


def inprocess_rows_per_s(model: Path, batch: int, seconds: float) -> float:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), opts)
    x = np.random.default_rng(1).standard_normal((batch, 256)).astype(np.float32)
    for _ in range(5):
        session.run(None, {"INPUT": x})
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {"INPUT": x})
        runs += 1
    return runs * batch / (time.perf_counter() - start)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def served(url: str, model: str) -> int:
    """Requests the server has answered successfully for ``model`` (all versions) so far."""
    import grpc

    from volley._proto.inference import grpc_service_pb2 as pb
    from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name=model)).model_stats
        return sum(int(s.inference_stats.success.count) for s in stats)  # every version


def measure(
    server: ServerProcess, model: str, batch: int, concurrency: int, count: int
) -> dict[str, Any]:
    """Run ``volley perf`` and attribute the server's CPU time to the requests it answered."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "perf.json"
        cmd = [
            sys.executable, "-m", "volley.cli", "perf", "-m", model, "-u", server.url,
            "-b", str(batch), "--concurrency-range", str(concurrency),
            "--request-count", str(count), "-r", "3", "-s", "100",
            "--warmup-request-count", str(min(count, 200)), "--json", str(out),
        ]  # fmt: skip
        n0, cpu0 = served(server.url, model), cpu_seconds(server.proc.pid)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        cpu1, n1 = cpu_seconds(server.proc.pid), served(server.url, model)
        level = json.loads(out.read_text())["levels"][-1]
    requests = n1 - n0
    return {
        "model": model,
        "batch": batch,
        "concurrency": concurrency,
        "requests_per_s": level["requests_per_s"],
        "rows_per_s": level["inferences_per_s"],
        "p50_us": level["latency_us"]["p50"],
        "p99_us": level["latency_us"]["p99"],
        "server_queue_us": level["server"]["per_request_us"]["queue"],
        "server_infer_us": level["server"]["per_request_us"]["compute_infer"],
        "client_cpu_us_per_request": level["client"]["cpu_us_per_request"],
        "server_requests": requests,
        "server_cpu_us_per_request": 1e6 * (cpu1 - cpu0) / requests,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per window")
    parser.add_argument("--extra", nargs="*", default=[], help="extra volley serve flags")
    parser.add_argument("--instances", type=int, default=2, help="instances of the dense model")
    parser.add_argument("--delay-us", type=int, default=2000, help="its max_queue_delay")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": describe(), "date": time.strftime("%Y-%m-%d %H:%M")}
    with tempfile.TemporaryDirectory() as tmp:
        repo = build_repository(Path(tmp), args.instances, args.delay_us)
        results["dense_config"] = {"instances": args.instances, "max_queue_delay_us": args.delay_us}
        model_file = repo / "dense" / "1" / "model.onnx"
        server = ServerProcess(repo, extra_args=args.extra)
        try:
            n = args.requests
            batched = measure(server, "dense", 16, 16, max(n // 4, 200))
            inproc = inprocess_rows_per_s(model_file, 64, 3.0)
            batched["inprocess_rows_per_s_batch64"] = inproc
            batched["served_over_inprocess"] = batched["rows_per_s"] / inproc
            results["batching_efficiency"] = batched
            results["dense_batch1_c64"] = measure(server, "dense", 1, 64, n)
            results["add_batch1_c1"] = measure(server, "add", 1, 1, n)
        finally:
            server.stop()
    out = BENCH / "results" / f"server_cost_{args.instances}inst.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    for key in ("batching_efficiency", "dense_batch1_c64", "add_batch1_c1"):
        r = results[key]
        print(
            f"{key:20s} {r['requests_per_s']:8.0f} req/s {r['rows_per_s']:8.0f} rows/s "
            f"p50 {r['p50_us'] / 1000:6.2f} ms p99 {r['p99_us'] / 1000:6.2f} ms "
            f"server CPU {r['server_cpu_us_per_request']:6.1f} us/req"
            + (
                f"  served/in-process {r['served_over_inprocess']:.2f}"
                if "served_over_inprocess" in r
                else ""
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
