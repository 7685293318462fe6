"""The Grafana dashboard in deploy/grafana/volley.json, checked as a dashboard.

Only its structure here: panels, layout, queries, template variables, data sources. That every
metric and label it queries is one the server really exports is checked against a running
server in tests/integration/test_grafana_dashboard.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "deploy" / "grafana" / "volley.json"

PROMETHEUS = {"type": "prometheus", "uid": "${datasource}"}
PANEL_TYPES = {"timeseries", "stat"}
GRID_WIDTH = 24
#: Variables Grafana defines itself.
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__all"}

VARIABLE = re.compile(r"\$\{?(\w+)\}?")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
SELECTOR = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*\{([^}]*)\}")
RANGE_FUNCTION = re.compile(r"\b(rate|irate|increase)\(([^()]*)\)")
QUANTILE = re.compile(r"histogram_quantile\(\s*([0-9.]+)\s*,\s*(\w+)\s+by\s*\(([^)]*)\)")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(dashboard["panels"]) if p.get("type") != "row"]


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in query_panels(dashboard) for t in p["targets"]]


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def test_is_an_importable_dashboard(dashboard: dict[str, Any]) -> None:
    assert dashboard["title"] == "Volley"
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    assert dashboard["schemaVersion"] >= 38
    assert dashboard.get("id") is None, "an exported id would clash with the importer's"
    assert isinstance(dashboard["panels"], list) and dashboard["panels"]
    assert isinstance(dashboard["templating"]["list"], list)
    assert dashboard["time"]["from"].startswith("now-")


def test_data_source_is_a_variable_of_type_prometheus(dashboard: dict[str, Any]) -> None:
    source = variables(dashboard)["datasource"]
    assert source["type"] == "datasource"
    assert source["query"] == "prometheus"
    assert "__inputs" not in dashboard, "the data source variable replaces import inputs"
    for panel in query_panels(dashboard):
        assert panel["datasource"] == PROMETHEUS, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == PROMETHEUS, (panel["title"], target["refId"])
    for variable in variables(dashboard).values():
        if variable["type"] == "query":
            assert variable["datasource"] == PROMETHEUS, variable["name"]


@pytest.mark.parametrize("name", ["model", "instance"])
def test_model_and_instance_variables_list_label_values(
    dashboard: dict[str, Any], name: str
) -> None:
    variable = variables(dashboard)[name]
    assert variable["type"] == "query"
    query = variable_query(variable)
    match = re.fullmatch(r"label_values\(\s*(\w+)(\{[^}]*\})?\s*,\s*(\w+)\s*\)", query)
    assert match, query
    assert match.group(1).startswith(("volley_", "nv_inference_")), query
    assert match.group(3) == name
    assert variable["includeAll"] and variable["multi"]
    assert variable["allValue"] == ".*", "multi-value variables are matched with =~"
    assert variable.get("definition", query) == query


def test_panels_have_unique_ids_titles_and_a_place_on_the_grid(dashboard: dict[str, Any]) -> None:
    panels = list(all_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)), sorted(ids)
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        assert isinstance(panel["title"], str) and panel["title"].strip(), panel["id"]
        grid = panel["gridPos"]
        assert set(grid) >= {"h", "w", "x", "y"}, panel["title"]
        assert all(isinstance(grid[k], int) and grid[k] >= 0 for k in "hwxy"), panel["title"]
        assert grid["h"] > 0 and grid["w"] > 0, panel["title"]
        assert grid["x"] + grid["w"] <= GRID_WIDTH, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                other = cells.setdefault((x, y), panel["title"])
                assert other == panel["title"], f"{panel['title']!r} overlaps {other!r}"


def test_every_panel_queries_prometheus(dashboard: dict[str, Any]) -> None:
    panels = query_panels(dashboard)
    assert len(panels) >= 10
    for panel in panels:
        assert panel["type"] in PANEL_TYPES, (panel["title"], panel["type"])
        targets = panel["targets"]
        assert targets, panel["title"]
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in targets:
            assert isinstance(target["expr"], str) and target["expr"].strip(), panel["title"]
    for row in all_panels(dashboard["panels"]):
        if row.get("type") == "row":
            assert not row.get("targets"), row["title"]


def test_expressions_are_balanced_and_use_defined_variables(dashboard: dict[str, Any]) -> None:
    defined = set(variables(dashboard)) | BUILTIN_VARIABLES
    for expr in expressions(dashboard):
        depth = {"(": 0, "[": 0, "{": 0}
        closing = {")": "(", "]": "[", "}": "{"}
        for char in re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr):
            if char in depth:
                depth[char] += 1
            elif char in closing:
                depth[closing[char]] -= 1
                assert depth[closing[char]] >= 0, expr
        assert not any(depth.values()), expr
        used = set(VARIABLE.findall(expr))
        assert used <= defined, (expr, used - defined)


def test_every_selector_follows_the_instance_variable(dashboard: dict[str, Any]) -> None:
    for expr in expressions(dashboard):
        selectors = SELECTOR.findall(expr)
        assert selectors, expr
        for matchers in selectors:
            assert 'instance=~"$instance"' in matchers, expr


def test_rates_use_the_rate_interval(dashboard: dict[str, Any]) -> None:
    for expr in expressions(dashboard):
        for function, argument in RANGE_FUNCTION.findall(expr):
            assert argument.endswith("[$__rate_interval]"), (function, expr)


def test_quantiles_aggregate_over_le(dashboard: dict[str, Any]) -> None:
    quantiles = []
    for expr in expressions(dashboard):
        if "histogram_quantile" not in expr:
            continue
        match = QUANTILE.search(expr)
        assert match, expr
        quantile, aggregation, labels = match.groups()
        assert 0 < float(quantile) < 1, expr
        assert aggregation == "sum", expr
        assert "le" in {label.strip() for label in labels.split(",")}, expr
        assert "_bucket{" in expr, expr
        quantiles.append(expr)
    assert quantiles


def test_legends_name_only_labels_the_query_keeps(dashboard: dict[str, Any]) -> None:
    for panel in query_panels(dashboard):
        for target in panel["targets"]:
            kept = {
                label.strip()
                for group in GROUPING.findall(target["expr"])
                for label in group.split(",")
            }
            legend = set(LEGEND_LABEL.findall(target.get("legendFormat", "")))
            assert legend <= kept, (panel["title"], target["legendFormat"], target["expr"])


@pytest.mark.parametrize(
    ("what", "pattern"),
    [
        ("throughput", r"rate\(nv_inference_request_success\{"),
        ("inference count", r"rate\(nv_inference_count\{"),
        ("latency p50", r"histogram_quantile\(0\.5, .*volley_request_duration_seconds_bucket"),
        ("latency p99", r"histogram_quantile\(0\.99, .*volley_request_duration_seconds_bucket"),
        ("queue time p99", r"histogram_quantile\(0\.99, .*volley_queue_duration_seconds_bucket"),
        ("queue depth", r"volley_queue_depth\{"),
        ("pending requests", r"nv_inference_pending_request_count\{"),
        ("batch size p50", r"histogram_quantile\(0\.5, .*volley_batch_size_bucket"),
        ("batch size mean", r"volley_batch_size_sum\{.*/.*volley_batch_size_count\{"),
        ("memory by device", r"by \(model, device\) \(volley_model_memory_bytes\{"),
        ("errors by reason", r"by \([^)]*reason[^)]*\) \(rate\(nv_inference_request_failure\{"),
        ("rejections by reason", r"by \(reason\) \(rate\(volley_rejected_requests_total\{"),
        ("loads", r"volley_model_loads_total\{"),
        ("unloads", r"volley_model_unloads_total\{"),
        ("evictions", r"volley_model_evictions_total\{"),
        ("transport", r"volley_transport_info\{"),
    ],
)
def test_dashboard_shows(dashboard: dict[str, Any], what: str, pattern: str) -> None:
    assert any(re.search(pattern, expr) for expr in expressions(dashboard)), what
