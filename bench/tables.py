"""The results tables of ``bench/README.md``, regenerated from ``bench/results/*.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from machine import short

START = "<!-- bench-results:start -->"
END = "<!-- bench-results:end -->"


def _scenario_rows(result: dict[str, Any]) -> list[str]:
    rows = []
    inprocess = result.get("inprocess")
    for level in result["levels"]:
        ratio = level.get("served_over_inprocess")
        rows.append(
            "| {scenario} | {model} | {batch} | {level} | {rps:.0f} | {p50:.2f} | {p99:.2f} | "
            "{inproc} | {ratio} | {stable} | {machine} |".format(
                scenario=result["scenario"],
                model=result["model"],
                batch=result["batch_size"],
                level=level["level"],
                rps=level["requests_per_s"],
                p50=level["p50_ms"],
                p99=level["p99_ms"],
                inproc=f"{inprocess['inferences_per_s']:.0f}" if inprocess else "-",
                ratio=f"{ratio:.2f}" if ratio is not None else "-",
                stable={True: "yes", False: "no", None: "-"}[level["stable"]],
                machine=short(result["machine"]),
            )
        )
    return rows


def _us(value: float | None) -> str:
    return f"{value:.0f}" if value is not None else "-"


def _client_cost_rows(result: dict[str, Any]) -> list[str]:
    return [
        f"| {case['model']} | {case['concurrency']} | {case['requests']} | "
        f"{case['volley_perf_us']:.0f} | {case['tritonclient_aio_us']:.0f} | "
        f"{case['ratio']:.2f} | {_us(case.get('bare_grpc_aio_us'))} | {short(result['machine'])} |"
        for case in result["cases"]
    ]


def render(results_dir: Path) -> str:
    """Markdown tables of every stored result."""
    scenario_rows: list[str] = []
    cost_rows: list[str] = []
    for path in sorted(results_dir.glob("*.json")):
        result = json.loads(path.read_text())
        if result.get("kind") == "client_cost":
            cost_rows += _client_cost_rows(result)
        elif result.get("kind") == "scenario":
            scenario_rows += _scenario_rows(result)
    parts = []
    if scenario_rows:
        parts += [
            "| Scenario | Model | Batch | Concurrency | Req/s | p50 ms | p99 ms | "
            "In-process inf/s | Served / in-process | Stable | Machine |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
            *scenario_rows,
        ]
    if cost_rows:
        parts += [
            "",
            "Client CPU per request (µs, all client threads), same server, model, "
            "concurrency and request count:",
            "",
            "| Model | Concurrency | Requests | volley perf | tritonclient.grpc.aio | ratio "
            "| bare grpc.aio | Machine |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
            *cost_rows,
        ]
    return "\n".join(parts) if parts else "_No results yet: run `python bench/run.py`._"


def update_readme(readme: Path, results_dir: Path) -> None:
    """Replace the text between the markers of ``readme`` with fresh tables."""
    text = readme.read_text()
    head, start, rest = text.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"{readme}: markers {START} / {END} not found")
    readme.write_text(f"{head}{START}\n{render(results_dir)}\n{END}{tail}")
