"""Results as a terminal table, perf_analyzer-style CSV, and JSON."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .metrics import PERCENTILES, Measurement
from .profiler import LevelResult

#: perf_analyzer's CSV columns (latencies and times in microseconds), then Volley's own.
CSV_COLUMNS = (
    "Inferences/Second",
    "Client Send",
    "Network+Server Send/Recv",
    "Server Queue",
    "Server Compute Input",
    "Server Compute Infer",
    "Server Compute Output",
    "Client Recv",
    "p50 latency",
    "p90 latency",
    "p95 latency",
    "p99 latency",
    "Avg latency",
    "Requests/Second",
    "Requests Sent",
    "Requests OK",
    "Errors",
    "Client CPU Busy",
    "Client CPU us/Request",
    "Stable",
)


def level_column(results: Sequence[LevelResult]) -> str:
    """The first CSV column: ``Concurrency`` or ``Request Rate``."""
    return "Request Rate" if results and results[0].mode == "request_rate" else "Concurrency"


def _level_value(result: LevelResult) -> str:
    return str(int(result.level)) if result.mode == "concurrency" else f"{result.level:g}"


def _server_us(m: Measurement) -> dict[str, float] | None:
    return m.server.per_request_us() if m.server is not None and m.server.success_count else None


def csv_row(result: LevelResult) -> dict[str, str]:
    """One CSV row of ``result`` keyed by column name."""
    m = result.summary
    server = _server_us(m)
    avg = m.avg_latency_us()
    row = {
        "Inferences/Second": f"{result.inferences_per_s():.2f}",
        # Requests are serialized before the window and responses are not parsed, so the
        # client's own send and receive times are zero.
        "Client Send": "0",
        "Client Recv": "0",
        "p50 latency": _us(m.latency_us(50)),
        "p90 latency": _us(m.latency_us(90)),
        "p95 latency": _us(m.latency_us(95)),
        "p99 latency": _us(m.latency_us(99)),
        "Avg latency": _us(avg),
        "Requests/Second": f"{m.requests_per_s():.2f}",
        "Requests Sent": str(m.sent),
        "Requests OK": str(m.ok),
        "Errors": str(m.failed),
        "Client CPU Busy": ";".join(f"{b:.3f}" for b in m.client_busy()),
        "Client CPU us/Request": f"{m.client_cpu_us_per_request():.1f}",
        "Stable": "" if result.stable is None else str(result.stable).lower(),
    }
    if server is None:
        for column in (
            "Network+Server Send/Recv",
            "Server Queue",
            "Server Compute Input",
            "Server Compute Infer",
            "Server Compute Output",
        ):
            row[column] = ""
    else:
        in_server = sum(server.values())
        row["Network+Server Send/Recv"] = _us(max(0.0, avg - in_server))
        row["Server Queue"] = _us(server["queue"])
        row["Server Compute Input"] = _us(server["compute_input"])
        row["Server Compute Infer"] = _us(server["compute_infer"])
        row["Server Compute Output"] = _us(server["compute_output"])
    return row


def write_csv(path: Path, results: Sequence[LevelResult]) -> None:
    """Write perf_analyzer-style CSV: one row per level, times in microseconds."""
    first = level_column(results)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=(first, *CSV_COLUMNS))
        writer.writeheader()
        for result in results:
            writer.writerow({first: _level_value(result), **csv_row(result)})


def _us(value: float) -> str:
    return str(round(value))


def measurement_dict(m: Measurement, batch_size: int) -> dict[str, Any]:
    """JSON form of one measurement."""
    server = _server_us(m)
    return {
        "requests": {
            "sent": m.sent,
            "ok": m.ok,
            "failed": m.failed,
            "errors": dict(sorted(m.errors.items())),
            "delayed": m.delayed,
            "invalid_responses": m.invalid,
        },
        "elapsed_s": m.elapsed_ns / 1e9,
        "requests_per_s": m.requests_per_s(),
        "inferences_per_s": m.requests_per_s() * batch_size,
        "latency_us": m.latency_summary_us(),
        "client": {
            "cpu_busy": m.client_busy(),
            "cpu_us_per_request": m.client_cpu_us_per_request(),
            "cpu_s": [c / 1e9 for c in m.cpu_ns],
        },
        "server": None
        if m.server is None
        else {
            "per_request_us": server,
            "counters": m.server.to_dict(),
        },
    }


def level_dict(result: LevelResult) -> dict[str, Any]:
    """JSON form of one level, with every window it measured."""
    key = "concurrency" if result.mode == "concurrency" else "request_rate"
    level: float = int(result.level) if result.mode == "concurrency" else result.level
    return {
        key: level,
        "batch_size": result.batch_size,
        "stable": result.stable,
        "kept_up": result.kept_up,
        "trials": len(result.windows),
        **measurement_dict(result.summary, result.batch_size),
        "windows": [measurement_dict(w, result.batch_size) for w in result.windows],
        "warmup": None
        if result.warmup is None
        else {
            "sent": result.warmup.sent,
            "ok": result.warmup.ok,
        },
    }


def format_table(results: Sequence[LevelResult]) -> str:
    """A fixed-width table of the levels (latencies in milliseconds)."""
    rate_mode = bool(results) and results[0].mode == "request_rate"
    headers = [
        "Rate/s" if rate_mode else "Concurrency",
        "Infer/s",
        "Req/s",
        *(f"p{p} ms" for p in PERCENTILES),
        "Avg ms",
        "Srv queue ms",
        "Srv compute ms",
        "Errors",
        "Client CPU",
        "Stable",
    ]
    if rate_mode:
        headers.insert(-1, "Late")
    rows = [_table_row(r, rate_mode) for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    out = io.StringIO()
    out.write("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)).rstrip() + "\n")
    for row in rows:
        out.write("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")
    return out.getvalue()


def _table_row(result: LevelResult, rate_mode: bool) -> list[str]:
    m = result.summary
    server = _server_us(m)
    busy = m.client_busy()
    if not busy:
        cpu = "-"
    elif len(busy) == 1:
        cpu = f"{busy[0]:.0%}"
    else:
        cpu = f"{min(busy):.0%}-{max(busy):.0%}"
    row = [
        _level_value(result),
        f"{result.inferences_per_s():.1f}",
        f"{m.requests_per_s():.1f}",
        *(_ms(m.latency_us(p)) for p in PERCENTILES),
        _ms(m.avg_latency_us()),
        "-" if server is None else _ms(server["queue"]),
        "-"
        if server is None
        else _ms(server["compute_input"] + server["compute_infer"] + server["compute_output"]),
        str(m.failed),
        cpu,
        {None: "-", True: "yes", False: "NO"}[result.stable],
    ]
    if rate_mode:
        late = m.delayed / m.sent if m.sent else 0.0
        row.insert(-1, f"{late:.0%}")
    return row


def _ms(us: float) -> str:
    return "-" if math.isnan(us) else f"{us / 1e3:.3f}"


def warnings(results: Sequence[LevelResult], stability_percentage: float) -> list[str]:
    """One line per problem worth pointing out under the table."""
    lines = []
    for r in results:
        label = f"{level_column([r]).lower()} {_level_value(r)}"
        m = r.summary
        if r.stable is False:
            lines.append(
                f"{label}: not stable within {stability_percentage:g}% after "
                f"{len(r.windows)} windows (try a longer --measurement-interval)"
            )
        if m.errors:
            detail = ", ".join(f"{k} x{v}" for k, v in sorted(m.errors.items()))
            lines.append(f"{label}: {m.failed} of {m.sent} requests failed ({detail})")
        if m.invalid:
            lines.append(f"{label}: {m.invalid} sampled responses were malformed")
        if not r.kept_up:
            lines.append(
                f"{label}: could not keep up: {m.delayed} of {m.sent} requests went "
                f"out late (sent {m.sends_per_s():.1f}/s)"
            )
    return lines
