"""Validated ``volley perf`` options, built from the command line or by callers directly."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError
from .inputs import InputOptions
from .profiler import Mode, ProfileSettings
from .ranges import parse_concurrency_range, parse_inputs, parse_rate_range, parse_shapes


@dataclass(frozen=True)
class PerfOptions:
    """Everything one ``volley perf`` run needs."""

    model: str
    profile: ProfileSettings
    inputs: InputOptions = field(default_factory=InputOptions)
    url: str = "127.0.0.1:8001"
    model_version: str = ""
    #: Load-generating processes; 1 runs the load in the calling process.
    workers: int = 1
    connect_timeout_s: float = 3.0
    use_uvloop: bool = True
    csv_path: Path | None = None
    json_path: Path | None = None
    plot_path: Path | None = None
    show_progress: bool = False
    #: ``--input`` declarations: (name, datatype, dims without the batch dimension).
    declared_inputs: tuple[tuple[str, str, list[int]], ...] = ()


def from_args(args: argparse.Namespace, show_progress: bool) -> PerfOptions:
    """Check the parsed command line and turn it into :class:`PerfOptions`."""
    if args.concurrency_range and args.request_rate_range:
        raise UsageError("give --concurrency-range or --request-rate-range, not both")
    if args.streaming and args.request_rate_range:
        raise UsageError(
            "--streaming runs a closed loop per stream: use --concurrency-range, not "
            "--request-rate-range"
        )
    mode: Mode
    if args.request_rate_range:
        mode = "request_rate"
        levels: list[float] = parse_rate_range(args.request_rate_range)
    else:
        mode = "concurrency"
        levels = [float(c) for c in parse_concurrency_range(args.concurrency_range or "1")]
    _at_least("--batch-size", args.batch_size, 1)
    _at_least("--request-count", args.request_count, 0)
    _at_least("--measurement-interval", args.measurement_interval, 1)
    _at_least("--max-trials", args.max_trials, 1)
    _at_least("--workers", args.workers, 1)
    _at_least("--max-inflight", args.max_inflight, 1)
    _at_least("--warmup-request-count", args.warmup_request_count, 0)
    if args.stability_percentage <= 0:
        raise UsageError(
            f"bad --stability-percentage {args.stability_percentage:g}: must be positive"
        )
    if args.percentile is not None and not 1 <= args.percentile <= 99:
        raise UsageError(f"bad --percentile {args.percentile}: must be 1 to 99")
    if args.connect_timeout <= 0:
        raise UsageError(f"bad --connect-timeout {args.connect_timeout:g}: must be positive")
    for flag, path in (
        ("-f", args.latency_report_file),
        ("--json", args.json),
        ("--plot", args.plot),
    ):
        if path is not None and not path.absolute().parent.is_dir():
            raise UsageError(f"bad {flag} '{path}': directory {path.parent} does not exist")
    timeout = args.request_timeout if args.request_timeout and args.request_timeout > 0 else None
    profile = ProfileSettings(
        mode=mode,
        levels=levels,
        batch_size=args.batch_size,
        request_count=args.request_count,
        measurement_interval_ms=args.measurement_interval,
        stability_percentage=args.stability_percentage,
        max_trials=args.max_trials,
        percentile=args.percentile,
        latency_threshold_ms=args.latency_threshold,
        poisson=args.request_distribution == "poisson",
        max_inflight=args.max_inflight,
        seed=args.seed,
        request_timeout_s=timeout,
        warmup_request_count=args.warmup_request_count,
        streaming=args.streaming,
    )
    inputs = InputOptions(
        data=args.input_data,
        seed=args.seed,
        batch_size=args.batch_size,
        shapes=parse_shapes(args.shape),
    )
    return PerfOptions(
        model=args.model_name,
        profile=profile,
        inputs=inputs,
        url=args.url,
        model_version=args.model_version,
        workers=args.workers,
        connect_timeout_s=args.connect_timeout,
        use_uvloop=not args.no_uvloop,
        csv_path=args.latency_report_file,
        json_path=args.json,
        plot_path=args.plot,
        show_progress=show_progress,
        declared_inputs=tuple(parse_inputs(args.input)),
    )


def _at_least(flag: str, value: int, low: int) -> None:
    if value < low:
        raise UsageError(f"bad {flag} {value}: must be at least {low}")
