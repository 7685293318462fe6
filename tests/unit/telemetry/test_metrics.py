"""The collector turns statistics into metric families; the exposition keeps Triton's names."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from volley.telemetry.metrics import ModelSnapshot, VolleyCollector, exposition
from volley.telemetry.stats import Histogram, ModelStats, ServerStats


def test_histogram_buckets_are_cumulative_with_an_overflow() -> None:
    h = Histogram((10, 100))
    for value in (1, 10, 11, 100, 1000, 5):
        h.observe(value)
    assert h.cumulative() == [3, 5, 6]
    assert h.sum == 1127


def test_exposition_names() -> None:
    stats = ModelStats("m", 2)
    stats.record_success(2_000_000)
    stats.record_failure(1_000, "REJECTED")
    stats.record_request(1, 500, 10, 20, 30)
    stats.record_execution(1, 10, 20, 30)
    server = ServerStats()
    server.record_rejected("draining")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        VolleyCollector(lambda: [ModelSnapshot(stats, 3, 5)], server, {"grpc": "native"})
    )
    text = exposition(registry).decode()
    assert "# TYPE nv_inference_request_success counter\n" in text
    assert 'nv_inference_request_success{model="m",version="2"} 1.0\n' in text
    assert 'nv_inference_request_failure{model="m",reason="REJECTED",version="2"} 1.0' in text
    assert 'nv_inference_pending_request_count{model="m",version="2"} 5.0' in text
    assert 'volley_queue_depth{model="m",version="2"} 3.0' in text
    assert 'volley_request_duration_seconds_bucket{le="0.0025",model="m",version="2"} 2.0' in text
    assert 'volley_request_duration_seconds_count{model="m",version="2"} 2.0' in text
    assert 'volley_rejected_requests_total{reason="draining"} 1.0' in text
    assert "nv_inference_request_success_total" not in text
