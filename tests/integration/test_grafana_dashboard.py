"""Every metric and label the Grafana dashboard queries is one a running server exports.

The names come from a real scrape of ``GET /metrics`` after successful, failing and refused
requests, as Prometheus stores them: the names on the sample lines. prometheus-client's parser
reads the text too, for the labels, but it renames a counter's samples to ``<name>_total``,
which the Triton-style counters (``nv_inference_request_success`` ...) do not carry on the
wire, so its sample names are only compared with the wire's, never trusted for the check.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from volley._proto.inference import grpc_service_pb2 as pb

from inproc import ROOT, running_server
from onnx_models import add_constant, make_model_dir

DASHBOARD = ROOT / "deploy" / "grafana" / "volley.json"

CONFIG = """backend: "onnxruntime"
max_batch_size: 8
dynamic_batching { }
"""

#: Labels Prometheus adds to every series it scrapes.
TARGET_LABELS = frozenset({"instance", "job"})

FUNCTIONS = frozenset(
    {
        "abs",
        "absent",
        "absent_over_time",
        "avg_over_time",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "count_over_time",
        "delta",
        "deriv",
        "exp",
        "floor",
        "histogram_quantile",
        "idelta",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "last_over_time",
        "ln",
        "log2",
        "log10",
        "max_over_time",
        "min_over_time",
        "predict_linear",
        "quantile_over_time",
        "rate",
        "resets",
        "round",
        "scalar",
        "sort",
        "sort_desc",
        "sqrt",
        "sum_over_time",
        "time",
        "timestamp",
        "vector",
    }
)
AGGREGATIONS = frozenset(
    {
        "avg",
        "bottomk",
        "count",
        "count_values",
        "group",
        "max",
        "min",
        "quantile",
        "stddev",
        "stdvar",
        "sum",
        "topk",
    }
)
KEYWORDS = frozenset(
    {"and", "bool", "ignoring", "inf", "nan", "offset", "on", "or", "unless", "without", "by"}
)

STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
RANGE = re.compile(r"\[[^\]]*\]")
GRAFANA_VARIABLE = re.compile(r"\$\{?\w+\}?")
NUMBER = re.compile(r"(?<![A-Za-z0-9_:.])\d+(?:\.\d*)?(?:[eE][+-]?\d+)?")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}")
MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*""')
IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
CALL = re.compile(r"\s*\(")
LABEL_VALUES = re.compile(r"label_values\((.+),\s*([A-Za-z_]\w*)\s*\)")


class Query:
    """The metric names, label matchers and grouping labels of one PromQL expression."""

    def __init__(self, expr: str) -> None:
        #: Metric names, and calls of functions PromQL does not have.
        self.names: set[str] = set()
        #: Label names matched in ``{...}``, by the metric selected.
        self.matchers: dict[str, set[str]] = {}
        #: Label names in ``by (...)``, ``without (...)``, ``on (...)`` ...
        self.grouping: set[str] = set()
        text = STRING.sub('""', expr)
        text = RANGE.sub(" ", text)
        text = GRAFANA_VARIABLE.sub(" ", text)
        text = NUMBER.sub(" ", text)
        for labels in GROUPING.findall(text):
            self.grouping |= {label.strip() for label in labels.split(",") if label.strip()}
        text = GROUPING.sub(" ", text)
        for name, matchers in SELECTOR.findall(text):
            key = name or "{" + matchers + "}"
            self.matchers.setdefault(key, set()).update(MATCHER.findall(matchers))
        text = SELECTOR.sub(lambda m: f" {m.group(1) or '{}'} ", text)
        if "{}" in text:
            self.names.add("{...}")
        for match in IDENTIFIER.finditer(text):
            word = match.group()
            if word in KEYWORDS:
                continue
            if CALL.match(text, match.end()) and word in FUNCTIONS | AGGREGATIONS:
                continue
            self.names.add(word)


def unknown_names(expr: str, series: dict[str, set[str]]) -> set[str]:
    """The names in ``expr`` that are neither an exported metric nor a PromQL function."""
    return Query(expr).names - set(series)


def unknown_labels(expr: str, series: dict[str, set[str]]) -> set[str]:
    """Labels ``expr`` matches or groups by that none of its metrics' series carry."""
    query = Query(expr)
    unknown = set()
    for name, labels in query.matchers.items():
        unknown |= labels - series.get(name, set()) - TARGET_LABELS
    carried = set().union(*(series.get(name, set()) for name in query.names))
    unknown |= query.grouping - carried - TARGET_LABELS
    return unknown


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def dashboard_problems(dashboard: dict[str, Any], series: dict[str, set[str]]) -> list[str]:
    """What in the dashboard's queries the exported ``series`` do not have."""
    problems = []
    queries = []
    for panel in all_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            queries.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = str(query["query"] if isinstance(query, dict) else query)
        match = LABEL_VALUES.fullmatch(text)
        if match is None:
            problems.append(f"variable {variable['name']!r}: not label_values(...): {text}")
            continue
        selector, label = match.groups()
        where = f"variable {variable['name']!r}"
        queries.append((where, selector))
        carried = set().union(*(series.get(name, set()) for name in Query(selector).names))
        if label not in carried | TARGET_LABELS:
            problems.append(f"{where}: no label {label!r} on {selector}")
    for where, expr in queries:
        if names := unknown_names(expr, series):
            problems.append(f"{where}: unknown metrics {sorted(names)} in {expr}")
        if labels := unknown_labels(expr, series):
            problems.append(f"{where}: unknown labels {sorted(labels)} in {expr}")
    return problems


def exported_series(text: str) -> dict[str, set[str]]:
    """Every sample name of the exposition text, as Prometheus stores it, with its labels."""
    wire = [
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    ]
    parsed = [s for family in text_string_to_metric_families(text) for s in family.samples]
    assert len(parsed) == len(wire)
    series: dict[str, set[str]] = {}
    for name, sample in zip(wire, parsed, strict=True):
        assert sample.name in (name, name + "_total"), (name, sample.name)
        series.setdefault(name, set()).update(sample.labels)
    return series


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        return str(response.read().decode())


def request(datatype: str = "FP32") -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="m")
    msg.inputs.add(name="X", datatype=datatype, shape=[2, 4])
    msg.raw_input_contents.append(np.ones((2, 4), np.float32).tobytes())
    return msg


async def served_series(repo: Path) -> dict[str, set[str]]:
    """The series of a server that answered, failed and refused requests."""
    make_model_dir(repo, "m", add_constant(1.0), config=CONFIG)
    serving = running_server(repo, max_inflight_requests=1, memory_budget=["cpu=1GiB"])
    async with serving as (server, stub, _channel):
        for _ in range(5):
            await stub.ModelInfer(request())
        for _ in range(2):
            try:
                await stub.ModelInfer(request("INT32"))
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            else:
                raise AssertionError("a request of the wrong datatype was answered")
        burst = await asyncio.gather(
            *(stub.ModelInfer(request()) for _ in range(20)), return_exceptions=True
        )
        assert any(isinstance(r, grpc.aio.AioRpcError) for r in burst), "nothing was refused"
        text = await asyncio.to_thread(scrape, server.metrics_port)
    return exported_series(text)


async def test_dashboard_queries_only_what_the_server_exports(tmp_path: Path) -> None:
    series = await served_series(tmp_path)
    assert "nv_inference_request_success" in series
    assert "nv_inference_request_success_total" not in series
    assert {"model", "reason"} <= series["nv_inference_request_failure"]
    assert "volley_request_duration_seconds_bucket" in series
    assert {"reason"} <= series["volley_rejected_requests_total"]

    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard_problems(dashboard, series) == []
    panels = [p for p in all_panels(dashboard["panels"]) if p.get("targets")]
    used = set().union(*(Query(t["expr"]).names for p in panels for t in p["targets"]))
    assert len(used) >= 15, sorted(used)

    tampered = copy.deepcopy(dashboard)
    tampered_panel = next(p for p in all_panels(tampered["panels"]) if p.get("targets"))
    tampered_panel["targets"].append(
        {"refId": "Z", "expr": 'sum(rate(volley_made_up_total{model=~"$model"}[5m]))'}
    )
    assert any("volley_made_up_total" in p for p in dashboard_problems(tampered, series))


def test_the_extraction_reports_what_does_not_exist() -> None:
    series = {
        "nv_inference_request_success": {"model", "version"},
        "volley_request_duration_seconds_bucket": {"model", "version", "le"},
        "volley_transport_info": {"protocol", "transport"},
    }
    known = (
        "histogram_quantile(0.99, sum by (le, model) "
        '(rate(volley_request_duration_seconds_bucket{model=~"$model", '
        'instance=~"$instance"}[$__rate_interval])))'
    )
    assert Query(known).names == {"volley_request_duration_seconds_bucket"}
    assert Query(known).grouping == {"le", "model"}
    assert unknown_names(known, series) == set()
    assert unknown_labels(known, series) == set()
    assert unknown_names(
        'sum(rate(volley_made_up_total{model=~"$model"}[$__rate_interval])) '
        "/ sum(rate(nv_inference_request_success[5m])) * 1e3",
        series,
    ) == {"volley_made_up_total"}
    assert unknown_names("sum(rate(nv_inference_request_success_total[1m]))", series) == {
        "nv_inference_request_success_total"
    }
    assert unknown_names("rat(nv_inference_request_success[1m])", series) == {"rat"}
    assert unknown_names('{__name__=~"nv_.*"}', series) == {"{...}"}
    assert unknown_labels('sum by (reason) (nv_inference_request_success{model="m"})', series) == {
        "reason"
    }
    assert unknown_labels('count(volley_transport_info{transprt="native"})', series) == {"transprt"}
    assert unknown_labels("sum by (instance) (volley_transport_info)", series) == set()
