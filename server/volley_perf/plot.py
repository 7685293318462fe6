"""``--plot``: latency percentiles against throughput, drawn with matplotlib (Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .errors import PerfError
from .metrics import PERCENTILES
from .profiler import LevelResult


def write_plot(path: Path, results: Sequence[LevelResult], title: str) -> None:
    """Save a PNG (or any format matplotlib infers from the suffix) of latency vs throughput."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        raise PerfError("--plot needs matplotlib (pip install 'volley-server[plot]')") from None
    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    throughput = [r.inferences_per_s() for r in results]
    for p in PERCENTILES:
        axes.plot(
            throughput, [r.summary.latency_us(p) / 1e3 for r in results], marker="o", label=f"p{p}"
        )
    axes.plot(
        throughput,
        [r.summary.avg_latency_us() / 1e3 for r in results],
        linestyle="--",
        marker=".",
        label="avg",
    )
    for r, x in zip(results, throughput, strict=True):
        text = str(int(r.level)) if r.mode == "concurrency" else f"{r.level:g}/s"
        axes.annotate(
            text,
            (x, r.summary.latency_us(99) / 1e3),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
        )
    axes.set_xlabel("throughput (inferences/s)")
    axes.set_ylabel("latency (ms)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=120)
    except (OSError, ValueError) as exc:
        raise PerfError(f"cannot write --plot '{path}': {exc}") from None
