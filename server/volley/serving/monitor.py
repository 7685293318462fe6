"""Drift and outlier monitoring of a model version's live inputs, off the request path.

A sampled request pays one copy of (at most ``max_rows`` of) its input rows into a ring
buffer. A background task scores the buffer against the reference: ``reference.npz`` in the
model folder (one array per input name), else the first ``reference_rows`` rows seen after the
version was loaded. Scores go to the metrics, to a per-model view (REST
``/v2/models/{name}/monitoring``), and to the log as a warning when a threshold is crossed.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from volley.telemetry.drift import Reference

log = logging.getLogger("volley.monitor")


@dataclass(frozen=True)
class MonitorSettings:
    """How models are monitored (validated by the server settings)."""

    sample_rate: float = 1.0
    window: int = 500
    reference_rows: int = 1000
    max_rows: int = 8
    psi_threshold: float = 0.2
    alpha: float = 0.01
    outlier_quantile: float = 0.999
    interval_s: float = 1.0


class ModelMonitor:
    """The live sample, reference and latest scores of one model version."""

    def __init__(
        self, model: str, version: int, settings: MonitorSettings, reference_file: Path | None
    ) -> None:
        self.model = model
        self.version = version
        self._settings = settings
        self._random = random.Random(0)
        self._window: dict[str, deque[np.ndarray]] = {}
        self._fresh: dict[str, list[np.ndarray]] = {}
        self._collecting: dict[str, list[np.ndarray]] = {}
        self.references: dict[str, Reference] = {}
        self.reference_source = "first requests"
        #: Rows sampled, outliers flagged, and the latest report per input.
        self.rows = 0
        self.outliers = 0
        self.reports: dict[str, dict[str, Any]] = {}
        self._alerted: set[str] = set()
        if reference_file is not None and reference_file.exists():
            with np.load(reference_file) as data:
                for name in data.files:
                    self.references[name] = self._reference(data[name])
            self.reference_source = reference_file.name

    def _reference(self, rows: np.ndarray) -> Reference:
        s = self._settings
        return Reference(
            rows, psi_threshold=s.psi_threshold, alpha=s.alpha, outlier_quantile=s.outlier_quantile
        )

    def observe(self, inputs: dict[str, np.ndarray]) -> None:
        """On the request path: sample, then copy at most ``max_rows`` rows of each input."""
        s = self._settings
        if s.sample_rate < 1.0 and self._random.random() >= s.sample_rate:
            return
        for name, array in inputs.items():
            if array.dtype == object or array.ndim == 0:
                continue
            rows = np.array(array[: s.max_rows], dtype=np.float32, copy=True)
            self._fresh.setdefault(name, []).append(rows)

    def take(self) -> dict[str, list[np.ndarray]]:
        """On the loop: the rows sampled since the last call."""
        fresh, self._fresh = self._fresh, {}
        return fresh

    def score(self, fresh: dict[str, list[np.ndarray]]) -> None:
        """In the background: fold ``fresh`` rows into the window (or reference) and score.

        The view is read on the loop while this runs in a worker thread, so every input is
        always in ``references`` or ``_collecting``, and ``rows`` counts a batch only once its
        report is published.
        """
        for name, parts in fresh.items():
            rows = np.concatenate(parts)
            self._fold(name, rows)
            self.rows += len(rows)

    def _fold(self, name: str, rows: np.ndarray) -> None:
        s = self._settings
        if name not in self.references:
            collected = self._collecting.setdefault(name, [])
            collected.append(rows)
            if sum(len(p) for p in collected) < s.reference_rows:
                return
            everything = np.concatenate(collected)
            self.references[name] = self._reference(everything[: s.reference_rows])
            del self._collecting[name]
            rows = everything[s.reference_rows :]
            if not len(rows):
                return
        reference = self.references[name]
        flagged = int(np.count_nonzero(reference.outliers(rows)))
        self.outliers += flagged
        window = self._window.setdefault(name, deque(maxlen=s.window))
        window.extend(rows)
        if len(window) < max(10, s.window // 5):
            return
        report = reference.drift(np.stack(window))
        self.reports[name] = {
            "psi": report.psi_max,
            "ks": report.ks_max,
            "drifted_features": report.drifted_features,
            "features": report.features,
            "drift": report.drift,
            "window_rows": len(window),
        }
        if report.drift and name not in self._alerted:
            self._alerted.add(name)
            log.warning(
                "model '%s' version %d: input '%s' drifted (PSI %.3f > %.3f; %d of %d "
                "features differ by KS)",
                self.model,
                self.version,
                name,
                report.psi_max,
                s.psi_threshold,
                report.drifted_features,
                report.features,
            )
        elif not report.drift:
            self._alerted.discard(name)

    def view(self) -> dict[str, Any]:
        """The monitoring view of this version."""
        return {
            "model": self.model,
            "version": str(self.version),
            "reference": self.reference_source,
            "rows": self.rows,
            "outliers": self.outliers,
            "inputs": {
                name: self.reports.get(name, {"drift": None, "collecting_reference": True})
                for name in sorted(set(self.references) | set(self._collecting))
            },
        }


async def run_monitors(monitors: Callable[[], list[ModelMonitor]], interval_s: float) -> None:
    """Score every monitored version every ``interval_s`` (until cancelled)."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval_s)
        for monitor in monitors():
            fresh = monitor.take()
            try:
                await loop.run_in_executor(None, monitor.score, fresh)
            except Exception:
                log.exception("scoring model '%s' failed", monitor.model)
