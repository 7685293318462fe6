"""Prometheus metrics: Triton's ``nv_inference_*`` names and Volley's histograms and gauges.

Nothing is counted twice: requests are recorded once in each model version's ``ModelStats``
(and server-wide ``ServerStats``), and this collector turns those plain counters into metric
families when Prometheus scrapes ``GET /metrics``. The request path pays for no metric object.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from volley.telemetry.gpu import GpuMetrics
from volley.telemetry.release_metrics import ReleaseSnapshot, release_families
from volley.telemetry.stats import FAILURE_REASONS, Histogram, ModelStats, ServerStats

log = logging.getLogger("volley.telemetry")


@dataclass(slots=True)
class ModelSnapshot:
    """One served model version at scrape time."""

    stats: ModelStats
    #: Requests waiting in its queue.
    queued: int
    #: Requests accepted and not yet answered (queued or executing).
    pending: int
    #: Latest drift score (population stability index) by input, when monitored.
    drift: dict[str, float] | None = None
    #: Rows monitored and outliers flagged, when monitored.
    monitored_rows: int = 0
    outliers: int = 0


def _family(name: str, doc: str, kind: str) -> Metric:
    return Metric(name, doc, kind)


def _histogram(family: Metric, labels: dict[str, str], hist: Histogram, scale: float = 1.0) -> None:
    """Add a histogram's ``_bucket``/``_count``/``_sum`` samples (values times ``scale``)."""
    cumulative = hist.cumulative()
    for bound, count in zip(hist.bounds, cumulative, strict=False):
        family.add_sample(
            family.name + "_bucket", {**labels, "le": _float(bound * scale)}, float(count)
        )
    family.add_sample(family.name + "_bucket", {**labels, "le": "+Inf"}, float(cumulative[-1]))
    family.add_sample(family.name + "_count", labels, float(cumulative[-1]))
    family.add_sample(family.name + "_sum", labels, hist.sum * scale)


def _float(value: float) -> str:
    return repr(float(value))


class VolleyCollector(Collector):
    """Reads the statistics of every served model version, and the server's, at scrape time.

    With ``gpu``, each GPU's ``nv_gpu_*`` and ``nv_energy_consumption`` samples are added.
    """

    def __init__(
        self,
        models: Callable[[], Iterable[ModelSnapshot]],
        server: ServerStats,
        transports: dict[str, str],
        gpu: GpuMetrics | None = None,
        releases: Callable[[], ReleaseSnapshot] | None = None,
    ) -> None:
        self._models = models
        self._server = server
        self._transports = transports
        self._gpu = gpu
        self._releases = releases

    def collect(self) -> Iterator[Metric]:
        snapshots = list(self._models())
        counters = {
            "nv_inference_request_success": "Number of successful inference requests",
            "nv_inference_request_failure": "Number of failed inference requests, by reason",
            "nv_inference_count": "Number of inferences performed (batch rows)",
            "nv_inference_exec_count": "Number of model executions performed",
            "nv_inference_request_duration_us": "Cumulative inference request duration in µs",
            "nv_inference_queue_duration_us": "Cumulative inference queuing duration in µs",
            "nv_inference_compute_input_duration_us": "Cumulative compute input duration in µs",
            "nv_inference_compute_infer_duration_us": "Cumulative compute inference duration in µs",
            "nv_inference_compute_output_duration_us": "Cumulative compute output duration in µs",
        }
        counters.update(
            {
                "nv_cache_num_hits_per_model": "Number of response cache hits per model",
                "nv_cache_num_misses_per_model": "Number of response cache misses per model",
                "nv_cache_hit_duration_per_model": "Cumulative cache hit lookup duration in µs",
                "nv_cache_miss_duration_per_model": "Cumulative cache miss duration in µs",
            }
        )
        families = {name: _family(name, doc, "counter") for name, doc in counters.items()}
        pending = _family(
            "nv_inference_pending_request_count",
            "Instantaneous number of pending requests awaiting execution",
            "gauge",
        )
        depth = _family("volley_queue_depth", "Requests waiting in the model's queue", "gauge")
        memory = _family(
            "volley_model_memory_bytes", "Memory a model version occupies, by device", "gauge"
        )
        request_h = _family(
            "volley_request_duration_seconds",
            "Inference request latency in the server",
            "histogram",
        )
        queue_h = _family(
            "volley_queue_duration_seconds", "Time requests wait in the queue", "histogram"
        )
        compute_h = _family(
            "volley_compute_duration_seconds", "Duration of one model execution", "histogram"
        )
        batch_h = _family("volley_batch_size", "Rows per model execution", "histogram")
        drift = _family(
            "volley_drift_score", "Population stability index of an input's live window", "gauge"
        )
        outliers = _family("volley_outliers", "Input rows flagged as outliers", "counter")
        monitored = _family("volley_monitored_rows", "Input rows monitored", "counter")
        for snap in snapshots:
            s = snap.stats
            labels = {"model": s.name, "version": str(s.version)}
            values = {
                "nv_inference_request_success": s.success.count,
                "nv_inference_count": s.inference_count,
                "nv_inference_exec_count": s.execution_count,
                "nv_inference_request_duration_us": (s.success.ns + s.fail.ns) // 1000,
                "nv_inference_queue_duration_us": s.queue.ns // 1000,
                "nv_inference_compute_input_duration_us": s.compute_input.ns // 1000,
                "nv_inference_compute_infer_duration_us": s.compute_infer.ns // 1000,
                "nv_inference_compute_output_duration_us": s.compute_output.ns // 1000,
                "nv_cache_num_hits_per_model": s.cache_hit.count,
                "nv_cache_num_misses_per_model": s.cache_miss.count,
                "nv_cache_hit_duration_per_model": s.cache_hit.ns // 1000,
                "nv_cache_miss_duration_per_model": s.cache_miss.ns // 1000,
            }
            for name, value in values.items():
                families[name].add_sample(name, labels, float(value))
            for reason in FAILURE_REASONS:
                families["nv_inference_request_failure"].add_sample(
                    "nv_inference_request_failure",
                    {**labels, "reason": reason},
                    float(s.fail_reasons[reason]),
                )
            pending.add_sample(pending.name, labels, float(snap.pending))
            depth.add_sample(depth.name, labels, float(snap.queued))
            for (kind, device), size in sorted(s.memory_bytes.items()):
                memory.add_sample(
                    memory.name, {**labels, "device": f"{kind.lower()}{device}"}, float(size)
                )
            _histogram(request_h, labels, s.request_hist, 1e-9)
            _histogram(queue_h, labels, s.queue_hist, 1e-9)
            _histogram(compute_h, labels, s.compute_hist, 1e-9)
            _histogram(batch_h, labels, s.batch_hist)
            if snap.drift is not None:
                for name, score in sorted(snap.drift.items()):
                    drift.add_sample(drift.name, {**labels, "input": name}, score)
                outliers.add_sample(outliers.name + "_total", labels, float(snap.outliers))
                monitored.add_sample(monitored.name + "_total", labels, float(snap.monitored_rows))
        yield from families.values()
        yield from (pending, depth, memory, request_h, queue_h, compute_h, batch_h)
        yield from (drift, outliers, monitored)
        yield from self._server_families()
        if self._releases is not None:
            yield from release_families(self._releases())
        if self._gpu is not None:
            yield from self._gpu.collect()

    def _server_families(self) -> Iterator[Metric]:
        server = self._server
        rejected = _family(
            "volley_rejected_requests", "Requests refused before reaching a model", "counter"
        )
        for reason, count in sorted(server.rejected.items()):
            rejected.add_sample(rejected.name + "_total", {"reason": reason}, float(count))
        loads = _family("volley_model_loads", "Model loads, by result", "counter")
        for result, count in sorted(server.loads.items()):
            loads.add_sample(loads.name + "_total", {"result": result}, float(count))
        unloads = _family("volley_model_unloads", "Model unloads", "counter")
        unloads.add_sample(unloads.name + "_total", {}, float(server.unloads))
        evictions = _family(
            "volley_model_evictions", "Models evicted to make room for others", "counter"
        )
        evictions.add_sample(evictions.name + "_total", {}, float(server.evictions))
        on_demand = _family(
            "volley_on_demand_loads", "Loads of evicted models asked for by requests", "counter"
        )
        on_demand.add_sample(on_demand.name + "_total", {}, float(server.on_demand_loads))
        waited = _family(
            "volley_on_demand_wait_seconds",
            "Time requests waited for evicted models to load again",
            "counter",
        )
        waited.add_sample(waited.name + "_total", {}, server.on_demand_wait_ns / 1e9)
        held = _family(
            "volley_memory_held_bytes", "Bytes held by loaded models, by device", "gauge"
        )
        budget = _family("volley_memory_budget_bytes", "Memory budget, by device", "gauge")
        for device, size in sorted(server.memory_held().items()):
            held.add_sample(held.name, {"device": device}, float(size))
        for device, size in sorted(server.memory_budgets.items()):
            budget.add_sample(budget.name, {"device": device}, float(size))
        transport = _family("volley_transport_info", "The transports serving", "gauge")
        for protocol, name in sorted(self._transports.items()):
            transport.add_sample(transport.name, {"protocol": protocol, "transport": name}, 1.0)
        audit = _family("volley_audit_records", "Audit records, by outcome", "counter")
        for outcome, count in sorted(server.audit_counts.items()):
            audit.add_sample(audit.name + "_total", {"result": outcome}, float(count))
        yield from (rejected, loads, unloads, evictions, on_demand, waited, held, budget, audit)
        yield transport


def exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text format of ``registry``, with Triton's counter names.

    prometheus-client names a counter family ``<name>_total`` in its ``# HELP``/``# TYPE``
    lines; Triton's counters (``nv_inference_request_success`` ...) carry no suffix, in their
    samples or their comments, and dashboards written for Triton query them so.
    """
    text = generate_latest(registry).decode()
    lines = []
    for line in text.splitlines(keepends=True):
        if line.startswith(("# HELP nv_", "# TYPE nv_")):
            parts = line.split(" ", 3)
            if parts[2].endswith("_total"):
                parts[2] = parts[2][: -len("_total")]
            line = " ".join(parts)
        lines.append(line)
    return "".join(lines).encode()


class MetricsServer:
    """``GET /metrics`` in Prometheus text format, on a daemon thread."""

    def __init__(self, collector: Collector, address: str, port: int) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self._address = address
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> int:
        """Bind and serve on a daemon thread; returns the bound port."""
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics is served here")
                    return
                body = exposition(registry)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = ThreadingHTTPServer((self._address, self._port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="volley-metrics", daemon=True
        )
        self._thread.start()
        self.port = int(server.server_address[1])
        log.info("serving metrics on http://%s:%d/metrics", self._address, self.port)
        return self.port

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
