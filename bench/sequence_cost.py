"""Sequence batching throughput: 16 concurrent sequences on a stateful accumulator.

Serves the accumulator of ``tests/helpers/sequence_models.py`` (controls START/READY/CORRID and
implicit state kept by the server) with the Direct and the Oldest strategy, and runs
``--sequences`` concurrent sequences of ``--length`` requests each (one request of a sequence
in flight at a time, as a sequence requires) from gRPC asyncio clients; every answer is checked
against the running sum. Reports requests/s, p50/p99 latency, the mean batch size the server
formed (inference count / execution count) and server CPU per request, same run.

Run: ``.venv/bin/python bench/sequence_cost.py [--sequences 16] [--length 200]``; results go to
``bench/results/sequence_cost.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests" / "helpers"))
sys.path.insert(0, str(BENCH))

from machine import describe  # noqa: E402
from sequence_models import write_accumulator  # noqa: E402

from volley._proto.inference import grpc_service_pb2 as pb  # noqa: E402
from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc  # noqa: E402

from server_process import ServerProcess  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
STRATEGIES = {
    "direct": "direct { }",
    "oldest": "oldest { max_candidate_sequences: 16 preferred_batch_size: [ 8, 16 ] "
    "max_queue_delay_microseconds: 500 }",
}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def request(value: int, ident: int, start: bool, end: bool) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="acc")
    msg.inputs.add(name="INPUT", datatype="INT32", shape=[1, 1])
    msg.raw_input_contents.append(np.array([[value]], np.int32).tobytes())
    msg.parameters["sequence_id"].uint64_param = ident
    msg.parameters["sequence_start"].bool_param = start
    msg.parameters["sequence_end"].bool_param = end
    return msg


async def drive(url: str, sequences: int, length: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        async def one(ident: int) -> None:
            total = 0
            for i in range(length):
                started = time.perf_counter()
                reply = await stub.ModelInfer(request(i, ident, i == 0, i == length - 1))
                latencies.append(time.perf_counter() - started)
                total += i
                got = int(np.frombuffer(reply.raw_output_contents[0], np.int32)[0])
                assert got == total, (ident, i, got, total)

        begin = time.perf_counter()
        await asyncio.gather(*(one(1000 + s) for s in range(sequences)))
        return time.perf_counter() - begin, latencies


def counts(url: str) -> tuple[int, int]:
    with grpc.insecure_channel(url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        (s,) = stub.ModelStatistics(pb.ModelStatisticsRequest(name="acc")).model_stats
        return int(s.inference_count), int(s.execution_count)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--length", type=int, default=200)
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": describe(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "sequences": args.sequences,
        "length": args.length,
    }
    for name, strategy in STRATEGIES.items():
        with tempfile.TemporaryDirectory() as tmp:
            write_accumulator(Path(tmp), strategy=strategy, max_batch_size=16)
            server = ServerProcess(Path(tmp))
            try:
                asyncio.run(drive(server.url, 2, 5))  # warm
                n0, e0 = counts(server.url)
                cpu0 = cpu_seconds(server.proc.pid)
                elapsed, lat = asyncio.run(drive(server.url, args.sequences, args.length))
                cpu = cpu_seconds(server.proc.pid) - cpu0
                n1, e1 = counts(server.url)
            finally:
                server.stop()
        total = args.sequences * args.length
        row = {
            "requests_per_s": total / elapsed,
            "p50_us": float(np.percentile(lat, 50) * 1e6),
            "p99_us": float(np.percentile(lat, 99) * 1e6),
            "mean_batch": (n1 - n0) / max(e1 - e0, 1),
            "server_cpu_us_per_request": 1e6 * cpu / total,
        }
        results[name] = row
        print(
            f"{name:7s} {row['requests_per_s']:7.0f} req/s p50 {row['p50_us']:7.0f} us "
            f"p99 {row['p99_us']:7.0f} us mean batch {row['mean_batch']:5.2f} "
            f"server CPU {row['server_cpu_us_per_request']:6.1f} us/req",
            flush=True,
        )
    out = BENCH / "results" / "sequence_cost.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
