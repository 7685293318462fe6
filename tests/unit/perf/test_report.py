"""volley perf: CSV (perf_analyzer's columns), JSON and the terminal table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from volley_perf.metrics import Measurement
from volley_perf.profiler import LevelResult
from volley_perf.report import format_table, level_dict, warnings, write_csv
from volley_perf.server_stats import ServerCounters

PERF_ANALYZER_COLUMNS = [
    "Concurrency",
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
]


def _level(level: float, server: bool = True, **kw: object) -> LevelResult:
    latencies = np.arange(1, 101, dtype=np.int64) * 10_000  # 10 us .. 1000 us
    m = Measurement(
        sent=100,
        ok=100,
        elapsed_ns=10**9,
        latencies_ns=latencies,
        cpu_ns=[250_000_000],
        wall_ns=[10**9],
        server=ServerCounters(
            success_count=100,
            queue_ns=100 * 20_000,
            compute_input_ns=100 * 1_000,
            compute_infer_ns=100 * 300_000,
            compute_output_ns=100 * 2_000,
            inference_count=400,
        )
        if server
        else None,
    )
    args: dict[str, object] = {
        "mode": "concurrency",
        "level": level,
        "batch_size": 4,
        "summary": m,
        "windows": [m],
        "stable": True,
    }
    args.update(kw)
    return LevelResult(**args)  # type: ignore[arg-type]


def test_csv_has_perf_analyzer_columns_in_microseconds(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    write_csv(path, [_level(1), _level(2, server=False)])
    with path.open() as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames is not None
        assert list(reader.fieldnames[: len(PERF_ANALYZER_COLUMNS)]) == PERF_ANALYZER_COLUMNS
        rows = list(reader)
    first, second = rows
    assert first["Concurrency"] == "1" and second["Concurrency"] == "2"
    assert float(first["Inferences/Second"]) == 400.0
    assert first["p50 latency"] == "500" and first["p99 latency"] == "990"
    assert first["Avg latency"] == "505"
    assert first["Server Queue"] == "20" and first["Server Compute Infer"] == "300"
    assert first["Server Compute Input"] == "1" and first["Server Compute Output"] == "2"
    assert first["Network+Server Send/Recv"] == str(505 - 20 - 1 - 300 - 2)
    assert first["Client Send"] == "0" and first["Client Recv"] == "0"
    assert first["Requests/Second"] == "100.00" and first["Client CPU Busy"] == "0.250"
    assert first["Client CPU us/Request"] == "2500.0" and first["Stable"] == "true"
    assert second["Server Queue"] == "" and second["Network+Server Send/Recv"] == ""


def test_rate_mode_first_column(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    write_csv(path, [_level(250.5, mode="request_rate")])
    header = path.read_text().splitlines()[0].split(",")
    assert header[0] == "Request Rate" and header[1] == "Inferences/Second"
    assert path.read_text().splitlines()[1].startswith("250.5,")


def test_level_dict_is_json_ready() -> None:
    data = json.loads(json.dumps(level_dict(_level(8))))
    assert data["concurrency"] == 8 and data["batch_size"] == 4 and data["stable"] is True
    assert data["requests"] == {
        "sent": 100,
        "ok": 100,
        "failed": 0,
        "errors": {},
        "delayed": 0,
        "invalid_responses": 0,
    }
    assert data["inferences_per_s"] == 400.0
    assert data["latency_us"]["p95"] == 950.0
    assert data["server"]["per_request_us"]["queue"] == 20.0
    assert data["server"]["counters"]["inference_count"] == 400
    assert data["client"]["cpu_busy"] == [0.25]
    assert len(data["windows"]) == 1 and data["warmup"] is None


def test_table_and_warnings() -> None:
    unstable = _level(16, stable=False)
    unstable.summary.errors = {"UNAVAILABLE": 3}
    table = format_table([_level(1), unstable])
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["Concurrency", "Infer/s", "Req/s"]
    assert lines[1].split()[0] == "1" and "yes" in lines[1] and "NO" in lines[2]
    assert "0.500" in lines[1]  # p50 in ms
    notes = warnings([_level(1), unstable], 10)
    assert any("not stable" in n for n in notes)
    assert any("UNAVAILABLE x3" in n for n in notes)
