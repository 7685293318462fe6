"""What an ensemble costs over calling its middle model directly, in one run.

Starts ``volley serve`` on a repository holding the dense 256->1024->1024->16 model of
``server_cost.py`` and two ensembles around it:

* ``dense_passthrough``: one step, the dense model (the ensemble machinery alone);
* ``dense_pipeline``: identity ``pre`` (ONNX Identity on ``[b, 256]``) -> dense -> identity
  ``post`` (``[b, 16]``), each composing model with its own batcher.

Each of ``dense``, ``dense_passthrough`` and ``dense_pipeline`` is driven with ``volley perf``
at batch 1 and concurrency 16 (``--concurrency``), and the server process's CPU time is
attributed to the requests it answered (``server_cost.measure``): throughput, latency and server
CPU per request, and each ensemble's extra CPU per request over the dense model alone.
``--rounds`` repeats the three windows in turn to show the spread.

Run: ``.venv/bin/python bench/ensemble_cost.py``; results go to
``bench/results/ensemble_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests" / "helpers"))
sys.path.insert(0, str(BENCH))

from machine import describe  # noqa: E402
from server_cost import build_repository, measure  # noqa: E402

from server_process import ServerProcess  # noqa: E402

MODELS = ("dense", "dense_passthrough", "dense_pipeline")

IDENTITY_CONFIG = """backend: "onnxruntime"
max_batch_size: 64
dynamic_batching { }
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
"""

_STEP = (
    '{{ model_name: "{model}" model_version: -1 input_map {{ key: "{key_in}" value: "{tin}" }} '
    'output_map {{ key: "{key_out}" value: "{tout}" }} }}'
)


def _ensemble(steps: list[str]) -> str:
    return (
        'platform: "ensemble"\nmax_batch_size: 64\n'
        'input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ 256 ] } ]\n'
        'output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ 16 ] } ]\n'
        "ensemble_scheduling { step [ " + ", ".join(steps) + " ] }\n"
    )


def build_ensembles(root: Path, instances: int, delay_us: int) -> Path:
    """``server_cost``'s repository plus the identity steps and the two ensembles."""
    build_repository(root, instances, delay_us)
    for name, width in (("pre", 256), ("post", 16)):
        graph = helper.make_graph(
            [helper.make_node("Identity", ["X"], ["Y"])],
            name,
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["b", width])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["b", width])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        (root / name / "1").mkdir(parents=True)
        onnx.save(model, str(root / name / "1" / "model.onnx"))
        (root / name / "config.pbtxt").write_text(IDENTITY_CONFIG)
    dense = {"model": "dense", "key_in": "INPUT", "key_out": "OUTPUT"}
    (root / "dense_passthrough" / "1").mkdir(parents=True)
    (root / "dense_passthrough" / "config.pbtxt").write_text(
        _ensemble([_STEP.format(**dense, tin="INPUT", tout="OUTPUT")])
    )
    (root / "dense_pipeline" / "1").mkdir(parents=True)
    (root / "dense_pipeline" / "config.pbtxt").write_text(
        _ensemble(
            [
                _STEP.format(model="pre", key_in="X", key_out="Y", tin="INPUT", tout="pixels"),
                _STEP.format(**dense, tin="pixels", tout="dense_out"),
                _STEP.format(model="post", key_in="X", key_out="Y", tin="dense_out", tout="OUTPUT"),
            ]
        )
    )
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per window")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--rounds", type=int, default=1, help="times each window is run")
    parser.add_argument("--instances", type=int, default=2, help="instances of the dense model")
    parser.add_argument("--delay-us", type=int, default=2000, help="its max_queue_delay")
    parser.add_argument("--extra", nargs="*", default=[], help="extra volley serve flags")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": describe(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "dense_config": {"instances": args.instances, "max_queue_delay_us": args.delay_us},
        "windows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        repo = build_ensembles(Path(tmp), args.instances, args.delay_us)
        server = ServerProcess(repo, extra_args=args.extra)
        try:
            for _ in range(args.rounds):
                for model in MODELS:
                    window = measure(server, model, 1, args.concurrency, args.requests)
                    results["windows"].append(window)
        finally:
            server.stop()
    summary: dict[str, dict[str, float]] = {}
    for model in MODELS:
        windows = [w for w in results["windows"] if w["model"] == model]
        summary[model] = {
            key: sum(w[key] for w in windows) / len(windows)
            for key in ("requests_per_s", "p50_us", "p99_us", "server_cpu_us_per_request")
        }
    base = summary["dense"]["server_cpu_us_per_request"]
    for model in MODELS:
        summary[model]["extra_server_cpu_us_per_request"] = (
            summary[model]["server_cpu_us_per_request"] - base
        )
    results["summary"] = summary
    out = BENCH / "results" / "ensemble_cost.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    for model, r in summary.items():
        print(
            f"{model:18s} {r['requests_per_s']:8.0f} req/s p50 {r['p50_us'] / 1000:6.2f} ms "
            f"p99 {r['p99_us'] / 1000:6.2f} ms server CPU {r['server_cpu_us_per_request']:6.1f} "
            f"us/req (+{r['extra_server_cpu_us_per_request']:.1f} over dense)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
