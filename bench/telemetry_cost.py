"""What metrics and tracing cost: throughput and server CPU per request, one run.

Serves the dense 256->1024->1024->16 model of ``server_cost.py`` (batch-1 requests at
concurrency 64, ``volley perf``) under each configuration, in alternating rounds so that drift
of a noisy machine hits every configuration alike:

* ``metrics on`` (the default) and ``metrics off`` (``--allow-metrics false``), tracing off;
* tracing off, 1% and 100% sampled, exporting OTLP/gRPC to a receiver in this process that
  counts and drops the spans (metrics on).

Run: ``.venv/bin/python bench/telemetry_cost.py [--rounds 3] [--requests 3000]``; results go to
``bench/results/telemetry_cost.json``. Ratios are each configuration's median over the rounds
divided by the baseline's (metrics on, tracing off).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from server_cost import ServerProcess, build_repository, describe, measure  # noqa: E402


class _Sink(otlp_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans = 0

    def Export(self, request: otlp.ExportTraceServiceRequest, context: Any) -> Any:
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                self.spans += len(ss.spans)
        return otlp.ExportTraceServiceResponse()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000, help="requests per window")
    args = parser.parse_args()

    sink = _Sink()
    receiver = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    otlp_grpc.add_TraceServiceServicer_to_server(sink, receiver)
    port = receiver.add_insecure_port("127.0.0.1:0")
    receiver.start()
    trace = ["--trace-exporter", "otlp", "--trace-endpoint", f"http://127.0.0.1:{port}"]
    configs: dict[str, list[str]] = {
        "metrics on, tracing off": [],
        "metrics off": ["--allow-metrics", "false"],
        "tracing 1%": [*trace, "--trace-sample-ratio", "0.01"],
        "tracing 100%": [*trace, "--trace-sample-ratio", "1"],
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    spans: dict[str, int] = {name: 0 for name in configs}
    with tempfile.TemporaryDirectory() as tmp:
        repo = build_repository(Path(tmp), instances=2, delay_us=2000)
        for round_no in range(args.rounds):
            for name, flags in configs.items():
                before = sink.spans
                server = ServerProcess(repo, extra_args=flags)
                try:
                    result = measure(server, "dense", 1, 64, args.requests)
                finally:
                    server.stop()  # flushes the spans still queued
                spans[name] += sink.spans - before
                runs[name].append(result)
                print(
                    f"round {round_no + 1} {name:24s} {result['requests_per_s']:7.0f} req/s "
                    f"server CPU {result['server_cpu_us_per_request']:6.1f} us/req",
                    flush=True,
                )
    receiver.stop(0)

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    base = "metrics on, tracing off"
    summary = {
        name: {
            "requests_per_s": median(name, "requests_per_s"),
            "server_cpu_us_per_request": median(name, "server_cpu_us_per_request"),
            "p99_us": median(name, "p99_us"),
            "throughput_vs_baseline": median(name, "requests_per_s")
            / median(base, "requests_per_s"),
            "cpu_vs_baseline": median(name, "server_cpu_us_per_request")
            / median(base, "server_cpu_us_per_request"),
            "spans_received": spans[name],
        }
        for name in configs
    }
    results = {
        "machine": describe(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "workload": "dense 256-1024-1024-16, batch 1, concurrency 64, volley perf",
        "rounds": args.rounds,
        "requests_per_window": args.requests,
        "summary": summary,
        "runs": runs,
    }
    out = BENCH / "results" / "telemetry_cost.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    for name, s in summary.items():
        print(
            f"{name:24s} {s['requests_per_s']:7.0f} req/s ({s['throughput_vs_baseline']:.3f}x)  "
            f"server CPU {s['server_cpu_us_per_request']:6.1f} us/req "
            f"({s['cpu_vs_baseline']:.3f}x)  spans {s['spans_received']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
