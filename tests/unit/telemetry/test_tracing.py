"""Request tracing: configuration, sampling, settings, and the spans of a batch (no sockets)."""

from __future__ import annotations

import time

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from volley.errors import InvalidArgument, ResourceExhausted, VolleyError
from volley.telemetry.tracing import TraceConfig, Tracing

PARENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"


def traceparent(flags: str = "01") -> dict[str, str]:
    return {"traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-{flags}"}


def tracing(ratio: float = 1.0) -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    config = TraceConfig(exporter="console", sample_ratio=ratio)
    return Tracing(config, exporter, schedule_delay_millis=10), exporter


def start(t: Tracing, headers: dict[str, str] | None = None, model: str = "m") -> object:
    return t.start(headers or {}, "ModelInfer", model, "id-1", "grpc-native", time.monotonic_ns())


def test_config_from_the_environment() -> None:
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.01",
        "OTEL_SERVICE_NAME": "scoring",
    }
    config = TraceConfig.resolve(env=env)
    assert config == TraceConfig("otlp", "http/protobuf", None, 0.01, "scoring")
    # flags win over the environment
    flagged = TraceConfig.resolve("none", "grpc", "http://c:4317", 0.5, "x", env=env)
    assert flagged == TraceConfig("none", "grpc", "http://c:4317", 0.5, "x")
    assert TraceConfig.resolve(env={}) == TraceConfig()
    assert TraceConfig.resolve(env={"OTEL_TRACES_SAMPLER": "always_off"}).sample_ratio == 0.0


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_TRACES_EXPORTER": "zipkin"},
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},
        {"OTEL_TRACES_SAMPLER": "jaeger_remote"},
    ],
)
def test_bad_environment_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(VolleyError):
        TraceConfig.resolve(env=env)


def test_off_without_an_exporter() -> None:
    t = Tracing(TraceConfig())
    assert not t.enabled
    assert start(t) is None
    with pytest.raises(InvalidArgument, match="no trace exporter"):
        t.update({"trace_level": ["TIMESTAMPS"]})


def test_one_in_rate_is_sampled_and_count_limits() -> None:
    t, _ = tracing()
    t.update({"trace_rate": ["4"]})
    traced = [start(t) is not None for _ in range(20)]
    assert sum(traced) == 5 and traced[3] and not traced[0]
    t.update({"trace_rate": ["1"], "trace_count": ["3"]})
    assert sum(start(t) is not None for _ in range(10)) == 3
    assert t.settings()["trace_count"] == ["0"]


def test_a_sampled_parent_is_continued_even_at_ratio_zero() -> None:
    t, exporter = tracing(ratio=0.0)
    assert t.enabled and t.settings()["trace_rate"] == ["0"]
    assert start(t) is None
    assert start(t, traceparent("00")) is None
    request = start(t, traceparent("01"))
    assert request is not None
    request.finish()  # type: ignore[attr-defined]
    t.flush()
    (span,) = exporter.get_finished_spans()
    assert span.kind is SpanKind.SERVER
    assert f"{span.context.trace_id:032x}" == PARENT_TRACE
    assert span.parent is not None and f"{span.parent.span_id:016x}" == PARENT_SPAN
    assert span.attributes is not None and span.attributes["volley.transport"] == "grpc-native"


def test_a_garbled_traceparent_starts_a_new_trace() -> None:
    t, exporter = tracing()
    request = start(t, {"traceparent": "not-a-trace"})
    assert request is not None
    request.finish()  # type: ignore[attr-defined]
    t.flush()
    (span,) = exporter.get_finished_spans()
    assert span.parent is None


def test_batch_spans_link_every_traced_request() -> None:
    t, exporter = tracing()
    arrival = time.monotonic_ns()
    requests = [t.start({}, "ModelInfer", "m", f"r{i}", "http", arrival) for i in range(3)]
    traced = [(r, arrival) for r in requests if r is not None]
    t.batch(traced, "m", "1", 4, 7, arrival + 1000, arrival + 5000)
    for r in traced:
        r[0].finish(ResourceExhausted("queue full") if r is traced[0] else None)
    t.flush()
    spans = exporter.get_finished_spans()
    servers = {s.context.span_id: s for s in spans if s.name == "ModelInfer"}
    queues = [s for s in spans if s.name == "queue"]
    (batch,) = [s for s in spans if s.name == "batch"]
    assert len(servers) == 3 and len(queues) == 3
    assert {q.parent.span_id for q in queues if q.parent} == set(servers)
    assert {link.context.span_id for link in batch.links} == set(servers)
    assert batch.attributes is not None
    assert batch.attributes["volley.batch_size"] == 4
    assert batch.attributes["volley.batch_rows"] == 7
    assert batch.end_time is not None and batch.start_time is not None
    assert batch.end_time - batch.start_time == pytest.approx(4000, abs=2000)
    failed = servers[traced[0][0].span.get_span_context().span_id]
    assert failed.status.status_code is StatusCode.ERROR
    assert "RESOURCE_EXHAUSTED" in (failed.status.description or "")


def test_settings_per_model_and_clearing() -> None:
    t, _ = tracing()
    t.update({"trace_rate": ["10"]}, model="a")
    assert t.settings("a")["trace_rate"] == ["10"]
    assert t.settings()["trace_rate"] == ["1"]
    t.update({"trace_level": ["OFF"]}, model="a")
    assert start(t, model="a") is None and start(t, model="b") is not None
    t.update({"trace_level": None, "trace_rate": []}, model="a")
    assert t.settings("a") == t.settings()
    t.update({"trace_level": ["OFF"]})
    assert not t.enabled


@pytest.mark.parametrize(
    "changes",
    [
        {"trace_rate": ["-1"]},
        {"trace_rate": ["1", "2"]},
        {"trace_count": ["x"]},
        {"trace_count": ["-2"]},
        {"trace_level": ["LOUD"]},
        {"trace_level": ["TENSORS"]},
        {"trace_file": ["/tmp/t.json"]},
        {"trace_mode": ["triton"]},
        {"colour": ["red"]},
    ],
)
def test_bad_settings_are_refused(changes: dict[str, list[str]]) -> None:
    t, _ = tracing()
    before = t.settings()
    with pytest.raises(InvalidArgument):
        t.update(changes)
    assert t.settings() == before
