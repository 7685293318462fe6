"""Run the benchmark scenarios of ``bench/scenarios`` and tabulate them in ``bench/README.md``.

Each scenario (TOML or JSON) names a model repository and a model, the load levels and the
window; ``run.py`` starts a Volley server for it, runs ``volley perf --json`` against it, keeps
the result in ``bench/results/<scenario>.json`` and regenerates the README table from every
stored result.

Usage: python bench/run.py [SCENARIO ...] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SCENARIOS = BENCH / "scenarios"
RESULTS = BENCH / "results"
README = BENCH / "README.md"
sys.path.insert(0, str(ROOT / "tests" / "helpers"))

from machine import describe  # noqa: E402
from tables import update_readme  # noqa: E402

from server_process import ServerProcess  # noqa: E402


def load_scenario(path: Path) -> dict[str, Any]:
    """Read a scenario file and fill in defaults."""
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            raise SystemExit(f"{path}: TOML scenarios need Python 3.11+ (or use JSON)") from None
        data = tomllib.loads(path.read_text())
    else:
        data = json.loads(path.read_text())
    defaults: dict[str, Any] = {
        "description": "",
        "repository": "model_repository",
        "drop_dynamic_batching": False,
        "batch_size": 1,
        "measurement_interval_ms": 2000,
        "max_trials": 5,
        "warmup_request_count": 0,
        "workers": 1,
        "seed": 0,
        "inprocess_baseline": False,
        "inprocess_seconds": 3.0,
    }
    scenario = {**defaults, **data, "name": path.stem}
    if "model" not in scenario:
        raise SystemExit(f"{path}: 'model' is required")
    if ("concurrency" in scenario) == ("request_rates" in scenario):
        raise SystemExit(f"{path}: give exactly one of 'concurrency' or 'request_rates'")
    return scenario


def prepare_repository(scenario: dict[str, Any], workdir: Path) -> Path:
    """A private copy of the scenario's repository, with its config edits applied."""
    source = (ROOT / scenario["repository"]).resolve()
    target = workdir / "repository"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    if scenario["drop_dynamic_batching"]:
        from google.protobuf import text_format

        from volley._proto.inference import model_config_pb2 as mc

        config_path = target / scenario["model"] / "config.pbtxt"
        config = mc.ModelConfig()
        text_format.Parse(config_path.read_text(), config)
        config.ClearField("dynamic_batching")
        config_path.write_text(text_format.MessageToString(config))
    return target


def perf_args(scenario: dict[str, Any], url: str, out: Path) -> list[str]:
    """The ``volley perf`` command line for the scenario."""
    if "concurrency" in scenario:
        load = ["--concurrency-range", ",".join(str(c) for c in scenario["concurrency"])]
    else:
        load = ["--request-rate-range", ",".join(str(r) for r in scenario["request_rates"])]
        load += ["--request-distribution", scenario.get("request_distribution", "constant")]
    return [
        sys.executable, "-m", "volley.cli", "perf", "-m", scenario["model"], "-u", url,
        *load, "-b", str(scenario["batch_size"]),
        "-p", str(scenario["measurement_interval_ms"]), "-r", str(scenario["max_trials"]),
        "--warmup-request-count", str(scenario["warmup_request_count"]),
        "--workers", str(scenario["workers"]), "--seed", str(scenario["seed"]),
        "--json", str(out),
    ]  # fmt: skip


def run_scenario(scenario: dict[str, Any]) -> dict[str, Any]:
    """Serve, load, measure; return the stored result."""
    with tempfile.TemporaryDirectory(prefix="volley-bench-") as tmp:
        workdir = Path(tmp)
        repository = prepare_repository(scenario, workdir)
        server = ServerProcess(repository)
        try:
            out = workdir / "perf.json"
            done = subprocess.run(perf_args(scenario, server.url, out), check=False)
        finally:
            server.stop()
        if done.returncode != 0:
            raise SystemExit(f"{scenario['name']}: volley perf exited with {done.returncode}")
        perf = json.loads(out.read_text())
        inprocess = None
        if scenario["inprocess_baseline"]:
            from inprocess import measure

            inprocess = measure(
                repository / scenario["model"],
                scenario["batch_size"],
                scenario["seed"],
                scenario["inprocess_seconds"],
            )
    levels = []
    for level in perf["levels"]:
        ratio = inprocess and level["inferences_per_s"] / inprocess["inferences_per_s"]
        levels.append({
            "level": level.get("concurrency", level.get("request_rate")),
            "requests_per_s": level["requests_per_s"],
            "inferences_per_s": level["inferences_per_s"],
            "p50_ms": level["latency_us"]["p50"] / 1e3,
            "p99_ms": level["latency_us"]["p99"] / 1e3,
            "stable": level["stable"],
            "served_over_inprocess": ratio,
            "server_per_request_us": (level["server"] or {}).get("per_request_us"),
            "client_cpu_busy": level["client"]["cpu_busy"],
        })  # fmt: skip
    return {
        "kind": "scenario",
        "scenario": scenario["name"],
        "description": scenario["description"],
        "model": scenario["model"],
        "batch_size": scenario["batch_size"],
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": describe(),
        "scenario_settings": {k: v for k, v in scenario.items() if k != "name"},
        "levels": levels,
        "inprocess": inprocess,
        "perf": perf,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``make bench``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help="scenario names (default: all)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only regenerate the README table from bench/results",
    )
    args = parser.parse_args(argv)
    if not args.report_only:
        files = sorted([*SCENARIOS.glob("*.toml"), *SCENARIOS.glob("*.json")])
        if args.scenarios:
            files = [f for f in files if f.stem in args.scenarios]
            missing = set(args.scenarios) - {f.stem for f in files}
            if missing:
                raise SystemExit(f"unknown scenario(s): {', '.join(sorted(missing))}")
        RESULTS.mkdir(exist_ok=True)
        for path in files:
            scenario = load_scenario(path)
            print(f"== {scenario['name']}: {scenario['description']}", flush=True)
            result = run_scenario(scenario)
            (RESULTS / f"{scenario['name']}.json").write_text(json.dumps(result, indent=2) + "\n")
            for level in result["levels"]:
                ratio = level["served_over_inprocess"]
                print(
                    f"   level {level['level']}: {level['requests_per_s']:.0f} req/s, "
                    f"p50 {level['p50_ms']:.2f} ms, p99 {level['p99_ms']:.2f} ms"
                    + (f", served/in-process {ratio:.2f}" if ratio is not None else "")
                )
    update_readme(README, RESULTS)
    print(f"updated {README.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
