"""``volley perf`` arguments and entry point."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import progress
from .errors import PerfError
from .options import PerfOptions, from_args
from .plot import write_plot
from .profiler import LevelResult
from .report import format_table, warnings, write_csv
from .session import PerfReport, run_perf


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``volley perf`` flags on ``parser`` (perf_analyzer's names where they exist)."""
    target = parser.add_argument_group("target")
    target.add_argument("-m", "--model-name", required=True, help="model to benchmark")
    target.add_argument(
        "-x", "--model-version", default="", help="model version (default: the server's choice)"
    )
    target.add_argument(
        "-u",
        "--url",
        default="127.0.0.1:8001",
        help="gRPC address of the server (default 127.0.0.1:8001)",
    )
    target.add_argument(
        "-i", "--protocol", choices=["grpc"], default="grpc", help="only gRPC is supported"
    )
    target.add_argument(
        "--connect-timeout",
        type=float,
        default=3.0,
        metavar="S",
        help="give up if the server cannot be reached in S seconds (default 3)",
    )
    target.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="deadline of each request in seconds; 0 = none (default 30)",
    )

    load = parser.add_argument_group("load")
    load.add_argument(
        "--concurrency-range",
        metavar="START:END:STEP",
        help="closed loop: requests kept in flight; STEP is linear, xF "
        "multiplies (1:64:x2), A,B,C lists levels (default 1)",
    )
    load.add_argument(
        "--request-rate-range",
        metavar="START:END:STEP",
        help="open loop: requests per second, sent on schedule",
    )
    load.add_argument(
        "--request-distribution",
        choices=["constant", "poisson"],
        default="constant",
        help="open loop: gaps between requests",
    )
    load.add_argument(
        "--max-inflight",
        type=int,
        default=256,
        metavar="N",
        help="open loop: most requests in flight (default 256)",
    )
    load.add_argument("-b", "--batch-size", type=int, default=1, help="batch size (default 1)")
    load.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="spread the load over N processes (default 1: this process)",
    )
    load.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    load.add_argument(
        "--streaming",
        action="store_true",
        help="send over one ModelStreamInfer stream per concurrency slot (as perf_analyzer)",
    )

    window = parser.add_argument_group("measurement")
    window.add_argument(
        "--request-count",
        type=int,
        default=0,
        metavar="N",
        help="each window is N requests (default: time windows)",
    )
    window.add_argument(
        "-p",
        "--measurement-interval",
        type=int,
        default=5000,
        metavar="MS",
        help="length of a time window in milliseconds (default 5000)",
    )
    window.add_argument(
        "-s",
        "--stability-percentage",
        type=float,
        default=10.0,
        help="the last 3 windows must agree within this percentage (default 10)",
    )
    window.add_argument(
        "-r", "--max-trials", type=int, default=10, help="most windows per level (default 10)"
    )
    window.add_argument(
        "--percentile",
        type=int,
        metavar="P",
        help="judge stability on the P-th percentile latency (default: average)",
    )
    window.add_argument(
        "-l",
        "--latency-threshold",
        type=float,
        metavar="MS",
        help="stop raising the load once latency exceeds MS milliseconds",
    )
    window.add_argument(
        "--warmup-request-count",
        type=int,
        default=0,
        metavar="N",
        help="requests sent at each level before measuring (default 0)",
    )

    data = parser.add_argument_group("input data")
    data.add_argument(
        "--input-data",
        default="random",
        metavar="random|zero|PATH",
        help="random (default), zero, a perf_analyzer JSON file, or a directory of NAME.npy files",
    )
    data.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME:d1,d2",
        help="dimensions of a dynamic input, without the batch dimension",
    )
    data.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME:DATATYPE:d1,d2",
        help="declare an input the server's metadata does not list (dims without the batch "
        "dimension of a batching model; -1 for a dynamic one, then give --shape); repeatable",
    )
    data.add_argument("--seed", type=int, default=0, help="seed of the random data (default 0)")

    out = parser.add_argument_group("output")
    out.add_argument(
        "-f",
        "--latency-report-file",
        type=Path,
        metavar="CSV",
        help="write perf_analyzer-style CSV (times in microseconds)",
    )
    out.add_argument("--json", type=Path, metavar="PATH", help="write the full results as JSON")
    out.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="plot latency percentiles against throughput (needs matplotlib)",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``volley perf``; returns the process exit code."""
    try:
        options = from_args(args, show_progress=progress.wanted())
        _print_header(options)
        report = run_perf(options, on_note=_note)
        _write_outputs(options, report)
    except PerfError as exc:
        print(f"volley perf: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("volley perf: interrupted", file=sys.stderr)
        return 130
    return 0


def _note(text: str) -> None:
    print(f"volley perf: note: {text}", file=sys.stderr)


def _print_header(options: PerfOptions) -> None:
    p = options.profile
    window = (
        f"windows of {p.request_count} requests"
        if p.request_count
        else f"windows of {p.measurement_interval_ms} ms"
    )
    workers = "1 worker" if options.workers == 1 else f"{options.workers} worker processes"
    print(
        f"volley perf: model '{options.model}' at {options.url}, batch size {p.batch_size}, "
        f"{window}, {workers}",
        flush=True,
    )


def _write_outputs(options: PerfOptions, report: PerfReport) -> None:
    levels: list[LevelResult] = report.levels
    if not report.server_statistics:
        print("server statistics: not available (ModelStatistics failed)")
    print(format_table(levels), end="")
    for line in warnings(levels, options.profile.stability_percentage):
        print(f"warning: {line}")
    if options.csv_path is not None:
        _write(options.csv_path, lambda path: write_csv(path, levels))
    if options.json_path is not None:
        text = json.dumps(report.to_json(), indent=2)
        _write(options.json_path, lambda path: path.write_text(text + "\n"))
    if options.plot_path is not None:
        write_plot(options.plot_path, levels, f"{report.model.name} ({options.url})")


def _write(path: Path, writer: object) -> None:
    assert callable(writer)
    try:
        writer(path)
    except OSError as exc:
        raise PerfError(f"cannot write '{path}': {exc.strerror or exc}") from None
