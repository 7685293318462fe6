"""``volley perf`` against a real Volley server: its counts must equal the server's statistics."""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from volley_perf.inputs import InputOptions
from volley_perf.options import PerfOptions
from volley_perf.profiler import ProfileSettings
from volley_perf.session import perf

from volley._proto.inference import grpc_service_pb2 as pb
from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc

from server_process import EXAMPLE_REPOSITORY, ServerProcess

CSV_COLUMNS = [
    "Concurrency", "Inferences/Second", "Client Send", "Network+Server Send/Recv",
    "Server Queue", "Server Compute Input", "Server Compute Infer", "Server Compute Output",
    "Client Recv", "p50 latency", "p90 latency", "p95 latency", "p99 latency", "Avg latency",
]  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    proc = ServerProcess(EXAMPLE_REPOSITORY)
    yield proc
    assert proc.stop() == 0, proc.log()


def stats(url: str, model: str) -> pb.ModelStatistics:
    with grpc.insecure_channel(url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        (only,) = stub.ModelStatistics(
            pb.ModelStatisticsRequest(name=model), timeout=10
        ).model_stats
        return only


def volley_perf(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "volley.cli", "perf", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def all_windows(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [w for level in report["levels"] for w in level["windows"]]


def check_counts_match(report: dict[str, Any], before: Any, after: Any, batch: int) -> int:
    """Exact agreement between what the tool reports and the server's counters."""
    windows = all_windows(report)
    ok = sum(w["requests"]["ok"] for w in windows)
    assert sum(w["requests"]["sent"] for w in windows) == ok
    assert after.inference_stats.success.count - before.inference_stats.success.count == ok
    assert after.inference_stats.fail.count == before.inference_stats.fail.count
    assert after.inference_count - before.inference_count == ok * batch
    for w in windows:  # the tool's own per-window view of the server agrees too
        assert w["server"]["counters"]["success_count"] == w["requests"]["ok"]
        assert w["server"]["counters"]["inference_count"] == w["requests"]["ok"] * batch
    return ok


def test_simple_concurrency_levels(server: ServerProcess, tmp_path: Path) -> None:
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    before = stats(server.url, "simple")
    done = volley_perf(
        "-m", "simple", "-u", server.url, "--concurrency-range", "1:4:x2", "-b", "2",
        "--request-count", "60", "--max-trials", "4", "--json", str(out_json),
        "-f", str(out_csv),
    )  # fmt: skip
    after = stats(server.url, "simple")
    assert done.returncode == 0, done.stderr
    report = json.loads(out_json.read_text())
    ok = check_counts_match(report, before, after, batch=2)
    assert ok >= 3 * 3 * 60

    assert report["model"] == "simple" and report["batch_size"] == 2
    assert report["server_statistics"] is True and report["window"] == {"request_count": 60}
    assert [level["concurrency"] for level in report["levels"]] == [1, 2, 4]
    for level in report["levels"]:
        assert 3 <= level["trials"] <= 4 and level["requests"]["errors"] == {}
        lat = level["latency_us"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert level["inferences_per_s"] == pytest.approx(2 * level["requests_per_s"])
        assert level["requests"]["ok"] == sum(w["requests"]["ok"] for w in level["windows"][-3:])
        assert level["server"]["per_request_us"]["compute_infer"] > 0
        assert 0 < level["client"]["cpu_busy"][0] <= 1.5

    with out_csv.open() as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames is not None
        assert list(reader.fieldnames[: len(CSV_COLUMNS)]) == CSV_COLUMNS
        rows = list(reader)
    assert [row["Concurrency"] for row in rows] == ["1", "2", "4"]
    for row, level in zip(rows, report["levels"], strict=True):
        assert float(row["Inferences/Second"]) == pytest.approx(level["inferences_per_s"], 1e-3)
        assert int(row["p99 latency"]) == round(level["latency_us"]["p99"])
        assert int(row["Server Compute Infer"]) >= 0 and int(row["Avg latency"]) > 0

    table = done.stdout.splitlines()
    header = next(i for i, line in enumerate(table) if line.lstrip().startswith("Concurrency"))
    assert [line.split()[0] for line in table[header + 1 : header + 4]] == ["1", "2", "4"]


def test_dense_classifier_two_workers(server: ServerProcess, tmp_path: Path) -> None:
    out_json = tmp_path / "r.json"
    before = stats(server.url, "dense_classifier")
    done = volley_perf(
        "-m", "dense_classifier", "-u", server.url, "--concurrency-range", "6",
        "--workers", "2", "-b", "4", "--request-count", "90", "--max-trials", "3",
        "--json", str(out_json),
    )  # fmt: skip
    after = stats(server.url, "dense_classifier")
    assert done.returncode == 0, done.stderr
    report = json.loads(out_json.read_text())
    ok = check_counts_match(report, before, after, batch=4)
    assert ok == 3 * 90
    (level,) = report["levels"]
    assert report["workers"] == 2 and len(level["client"]["cpu_busy"]) == 2
    executions = after.execution_count - before.execution_count
    assert 0 < executions <= ok


def test_request_rate_with_json_data(server: ServerProcess, tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"data": [
        {"TEXT": ["Hello", "World"], "IDS": [1, 2, 3]},
        {"TEXT": {"content": ["a"], "shape": [1]}, "IDS": [4]},
    ]}))  # fmt: skip
    out_json = tmp_path / "r.json"
    before = stats(server.url, "text_features")
    done = volley_perf(
        "-m", "text_features", "-u", server.url, "--request-rate-range", "200",
        "--request-distribution", "poisson", "--request-count", "40", "--max-trials", "1",
        "--input-data", str(data), "--json", str(out_json),
    )  # fmt: skip
    after = stats(server.url, "text_features")
    assert done.returncode == 0, done.stderr
    report = json.loads(out_json.read_text())
    assert check_counts_match(report, before, after, batch=1) == 40
    (level,) = report["levels"]
    assert report["mode"] == "request_rate" and level["request_rate"] == 200
    assert level["stable"] is None and isinstance(level["kept_up"], bool)
    assert level["requests"]["invalid_responses"] == 0


async def test_module_api(server: ServerProcess) -> None:
    options = PerfOptions(
        model="simple",
        url=server.url,
        profile=ProfileSettings(mode="concurrency", levels=[2], request_count=25, max_trials=3),
        inputs=InputOptions(data="zero"),
    )
    before = stats(server.url, "simple")
    report = await perf(options)
    after = stats(server.url, "simple")
    (level,) = report.levels
    sent = sum(w.sent for w in level.windows)
    assert sent == 75 == after.inference_stats.success.count - before.inference_stats.success.count
    assert level.summary.server is not None and level.summary.server.success_count == 75


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "no_such_model"], "not found"),
        (["-m", "simple", "--shape", "INPUT0"], "bad --shape"),
        (["-m", "simple", "--shape", "INPUT0:3"], "does not match"),
        (["-m", "simple", "--concurrency-range", "8:2"], "bad --concurrency-range"),
        (["-m", "simple", "--request-rate-range", "x"], "bad --request-rate-range"),
        (["-m", "simple", "-b", "99"], "max_batch_size"),
        (["-m", "simple", "UNREACHABLE"], "cannot reach"),
    ],
)
def test_bad_input_is_one_line(server: ServerProcess, args: list[str], message: str) -> None:
    url = server.url
    if "UNREACHABLE" in args:
        args = [a for a in args if a != "UNREACHABLE"]
        url = f"127.0.0.1:{_closed_port()}"
    done = volley_perf(*args, "-u", url, "--connect-timeout", "1", "--request-count", "5")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("volley perf: ") and message in lines[0]


def test_streaming_counts_match_the_server(server: ServerProcess, tmp_path: Path) -> None:
    out_json = tmp_path / "r.json"
    before = stats(server.url, "simple")
    done = volley_perf(
        "-m", "simple", "-u", server.url, "--streaming", "--concurrency-range", "4",
        "--request-count", "200", "--max-trials", "3", "--json", str(out_json),
    )  # fmt: skip
    after = stats(server.url, "simple")
    assert done.returncode == 0, done.stderr
    report = json.loads(out_json.read_text())
    ok = check_counts_match(report, before, after, batch=1)
    assert ok >= 3 * 200


def test_streaming_refuses_an_open_loop(server: ServerProcess) -> None:
    done = volley_perf("-m", "simple", "-u", server.url, "--streaming",
                       "--request-rate-range", "100")  # fmt: skip
    assert done.returncode == 2 and "--streaming" in done.stderr


def test_declared_inputs(server: ServerProcess, tmp_path: Path) -> None:
    out_json = tmp_path / "r.json"
    before = stats(server.url, "simple")
    done = volley_perf(
        "-m", "simple", "-u", server.url, "--input", "INPUT0:INT32:16",
        "--input", "INPUT1:INT32:16", "--concurrency-range", "2", "--request-count", "50",
        "--max-trials", "3", "--json", str(out_json),
    )  # fmt: skip
    after = stats(server.url, "simple")
    assert done.returncode == 0, done.stderr
    check_counts_match(json.loads(out_json.read_text()), before, after, batch=1)
    bad = volley_perf("-m", "simple", "-u", server.url, "--input", "INPUT0:INT33:16")
    assert bad.returncode == 2 and "unknown datatype 'INT33'" in bad.stderr
