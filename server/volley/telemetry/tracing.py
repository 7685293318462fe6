"""OpenTelemetry traces of inference requests: sampling, the request span, queue and batch spans.

A transport asks ``Tracing.start`` for a ``RequestTrace`` with the call's headers; the W3C
``traceparent``/``tracestate`` there continue the caller's trace (sampled when the caller
sampled it), otherwise one request in every ``trace_rate`` is traced. Nothing else on the
request path touches OpenTelemetry: with tracing off ``Tracing.enabled`` is False and
transports skip ``start`` altogether.

Spans: the server span of the call (ended by the data plane with the request's outcome), a
``queue`` span (arrival to the start of its batch) and one ``batch`` span per executed batch,
a child of the first traced request it served and linked to every traced request in it.
``TraceSetting`` (Triton's trace extension, ``trace_mode`` opentelemetry) reads and changes the
level, rate and count at run time, server-wide or per model.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from volley.errors import InvalidArgument, VolleyError

EXPORTERS = ("none", "otlp", "console")
PROTOCOLS = ("grpc", "http/protobuf")
LEVELS = ("OFF", "TIMESTAMPS")

_propagator = TraceContextTextMapPropagator()


@dataclass(frozen=True)
class TraceConfig:
    """Where spans go and how many requests are traced (flags, else ``OTEL_*`` variables)."""

    exporter: str = "none"
    protocol: str = "grpc"
    #: Collector address; None: the exporter's own variables and defaults.
    endpoint: str | None = None
    #: Fraction of requests without a sampled parent that are traced.
    sample_ratio: float = 1.0
    service_name: str = "volley"

    @classmethod
    def resolve(
        cls,
        exporter: str | None = None,
        protocol: str | None = None,
        endpoint: str | None = None,
        sample_ratio: float | None = None,
        service_name: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> TraceConfig:
        """Flags where given, else the OpenTelemetry environment variables, else defaults."""
        env = os.environ if env is None else env
        exporter = exporter or env.get("OTEL_TRACES_EXPORTER", "none").split(",")[0].strip()
        protocol = (
            protocol
            or env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "grpc"
        )
        if sample_ratio is None:
            sample_ratio = _ratio_from_env(env)
        service_name = service_name or env.get("OTEL_SERVICE_NAME") or "volley"
        if exporter not in EXPORTERS:
            raise VolleyError(
                f"trace exporter '{exporter}': expected one of {', '.join(EXPORTERS)}"
            )
        if protocol not in PROTOCOLS:
            raise VolleyError(f"OTLP protocol '{protocol}': expected one of {', '.join(PROTOCOLS)}")
        return cls(exporter, protocol, endpoint or None, sample_ratio, service_name)


def _ratio_from_env(env: Mapping[str, str]) -> float:
    """``OTEL_TRACES_SAMPLER`` / ``_ARG`` as a ratio (every sampler honours a sampled parent)."""
    sampler = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    name = sampler.removeprefix("parentbased_")
    if name == "always_on":
        return 1.0
    if name == "always_off":
        return 0.0
    if name == "traceidratio":
        text = env.get("OTEL_TRACES_SAMPLER_ARG", "1.0")
        try:
            ratio = float(text)
        except ValueError:
            raise VolleyError(f"OTEL_TRACES_SAMPLER_ARG '{text}' is not a number") from None
        if not 0.0 <= ratio <= 1.0:
            raise VolleyError(f"OTEL_TRACES_SAMPLER_ARG {ratio} is not between 0 and 1")
        return ratio
    raise VolleyError(f"OTEL_TRACES_SAMPLER '{sampler}' is not supported")


def build_exporter(config: TraceConfig) -> SpanExporter | None:
    """The span exporter ``config`` names (None for ``none``)."""
    if config.exporter == "none":
        return None
    if config.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        endpoint = config.endpoint
        insecure = True if endpoint and endpoint.startswith("http://") else None
        return GrpcExporter(endpoint=endpoint, insecure=insecure)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    endpoint = config.endpoint
    if endpoint and not endpoint.rstrip("/").endswith("/v1/traces"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    return HttpExporter(endpoint=endpoint)


@dataclass(frozen=True)
class TraceLevel:
    """One scope's trace settings (Triton's trace extension)."""

    level: str = "TIMESTAMPS"
    #: Trace one request in every ``rate`` without a sampled parent (0: only requests whose
    #: caller sampled them).
    rate: int = 1
    #: Traces still to take (-1: no limit).
    count: int = -1


def _parse_setting(key: str, values: Sequence[str], current: TraceLevel) -> TraceLevel:
    if key == "trace_level":
        levels = [v.upper() for v in values]
        for v in levels:
            if v == "TENSORS":
                raise InvalidArgument("trace_level TENSORS: tensor contents are never traced")
            if v not in LEVELS:
                raise InvalidArgument(f"trace_level '{v}': expected OFF or TIMESTAMPS")
        on = "TIMESTAMPS" in levels
        return replace(current, level="TIMESTAMPS" if on else "OFF")
    if len(values) != 1:
        raise InvalidArgument(f"'{key}' takes exactly one value, got {len(values)}")
    try:
        number = int(values[0])
    except ValueError:
        raise InvalidArgument(f"'{key}' must be an integer, got '{values[0]}'") from None
    if key == "trace_rate":
        if number < 0:
            raise InvalidArgument(f"trace_rate must be 0 or more, got {number}")
        return replace(current, rate=number)
    if key == "trace_count":
        if number < -1:
            raise InvalidArgument(f"trace_count must be -1 (no limit) or more, got {number}")
        return replace(current, count=number)
    if key in ("trace_file", "log_frequency"):
        raise InvalidArgument(f"'{key}' is not supported in OpenTelemetry trace mode")
    raise InvalidArgument(f"unknown trace setting '{key}'")


class RequestTrace:
    """The server span of one traced request and what the batch spans need of it."""

    __slots__ = ("span", "tracing", "version")

    def __init__(self, tracing: Tracing, span: trace.Span) -> None:
        #: The ``Tracing`` that started the span (batch spans go through it).
        self.tracing = tracing
        self.span = span
        self.version = ""

    def finish(self, error: BaseException | None = None) -> None:
        """End the request span with the request's outcome."""
        span = self.span
        if self.version:
            span.set_attribute("volley.model_version", self.version)
        if error is not None:
            if isinstance(error, VolleyError):
                span.set_status(Status(StatusCode.ERROR, f"{error.code.value}: {error.message}"))
            else:
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end(end_time=wall_ns(time.monotonic_ns()))


class Tracing:
    """Sampling, span creation and the run-time trace settings of one server."""

    def __init__(
        self, config: TraceConfig, exporter: SpanExporter | None = None, **processor: Any
    ) -> None:
        self.config = config
        self._provider: TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        if exporter is not None:
            resource = Resource.create({"service.name": config.service_name})
            self._provider = TracerProvider(resource=resource)
            self._provider.add_span_processor(BatchSpanProcessor(exporter, **processor))
            self._tracer = self._provider.get_tracer("volley")
        ratio = config.sample_ratio
        self._global = TraceLevel(rate=max(1, round(1 / ratio)) if ratio > 0 else 0)
        self._models: dict[str, TraceLevel] = {}
        self._credit: dict[str, int] = {}
        #: False when no request can be traced: transports skip ``start``.
        self.enabled = False
        self._refresh()

    # -- settings -------------------------------------------------------------------------------
    def _refresh(self) -> None:
        levels = [self._global, *self._models.values()]
        self.enabled = self._tracer is not None and any(t.level != "OFF" for t in levels)

    def settings(self, model: str = "") -> dict[str, list[str]]:
        """The settings in force for ``model`` (or server-wide), as Triton reports them."""
        t = self._models.get(model, self._global) if model else self._global
        return {
            "trace_level": [t.level],
            "trace_rate": [str(t.rate)],
            "trace_count": [str(t.count)],
            "trace_mode": ["opentelemetry"],
        }

    def update(self, changes: Mapping[str, Sequence[str] | None], model: str = "") -> None:
        """Apply ``TraceSetting`` changes; an empty/None value clears a model's override (or
        restores the server-wide default)."""
        base = self._models.get(model, self._global) if model else self._global
        updated = base
        cleared = False
        for key, values in changes.items():
            if key == "trace_mode":
                if values and list(values) != ["opentelemetry"]:
                    raise InvalidArgument("trace_mode: only 'opentelemetry' is supported")
                continue
            if not values:
                cleared = True
                default = TraceLevel() if not model else self._global
                field = {"trace_level": "level", "trace_rate": "rate", "trace_count": "count"}
                if key not in field:
                    raise InvalidArgument(f"unknown trace setting '{key}'")
                updated = replace(updated, **{field[key]: getattr(default, field[key])})
                continue
            updated = _parse_setting(key, values, updated)
        if updated.level != "OFF" and self._tracer is None:
            raise InvalidArgument(
                "no trace exporter is configured: start the server with --trace-exporter otlp "
                "(or OTEL_TRACES_EXPORTER=otlp)"
            )
        if model:
            if cleared and updated == self._global:
                self._models.pop(model, None)
            else:
                self._models[model] = updated
        else:
            self._global = updated
        self._credit.pop(model, None)
        self._refresh()

    # -- the request path ------------------------------------------------------------------------
    def _sampled(self, model: str) -> bool:
        settings = self._models.get(model, self._global)
        if settings.level == "OFF" or settings.count == 0 or settings.rate == 0:
            return False
        key = model if model in self._models else ""
        credit = self._credit.get(key, 0) + 1
        if credit < settings.rate:
            self._credit[key] = credit
            return False
        self._credit[key] = 0
        if settings.count > 0:
            taken = replace(settings, count=settings.count - 1)
            if key:
                self._models[key] = taken
            else:
                self._global = taken
        return True

    def start(
        self,
        headers: Mapping[str, str],
        name: str,
        model: str,
        request_id: str,
        transport: str,
        arrival_ns: int,
    ) -> RequestTrace | None:
        """The server span of a request, or None when it is not traced.

        ``headers`` are the call's metadata (lower-case keys); ``arrival_ns`` is
        ``time.monotonic_ns()`` when the call arrived.
        """
        tracer = self._tracer
        if tracer is None:
            return None
        settings = self._models.get(model, self._global)
        if settings.level == "OFF":
            return None
        parent = None
        if "traceparent" in headers:
            parent = _propagator.extract(headers)
            context = trace.get_current_span(parent).get_span_context()
            if not context.is_valid:
                parent = None
            elif not context.trace_flags.sampled:
                return None
        if parent is None and not self._sampled(model):
            return None
        span = tracer.start_span(
            name,
            context=parent,
            kind=SpanKind.SERVER,
            start_time=wall_ns(arrival_ns),
            attributes={
                "volley.model": model,
                "volley.request_id": request_id,
                "volley.transport": transport,
            },
        )
        return RequestTrace(self, span)

    def batch(
        self,
        traces: Sequence[tuple[RequestTrace, int]],
        model: str,
        version: str,
        requests: int,
        rows: int,
        start_ns: int,
        end_ns: int,
        error: str | None = None,
    ) -> None:
        """Record a batch: each traced request's queue span and one batch span linked to them.

        ``traces`` pairs each traced request with its arrival; times are ``monotonic_ns``.
        """
        tracer = self._tracer
        if tracer is None or not traces:
            return
        start_wall, end_wall = wall_ns(start_ns), wall_ns(end_ns)
        for request_trace, arrival_ns in traces:
            queue = tracer.start_span(
                "queue",
                context=trace.set_span_in_context(request_trace.span),
                start_time=wall_ns(arrival_ns),
                attributes={"volley.model": model, "volley.model_version": version},
            )
            queue.end(end_time=start_wall)
        first = traces[0][0].span
        span = tracer.start_span(
            "batch",
            context=trace.set_span_in_context(first),
            links=[Link(t.span.get_span_context()) for t, _ in traces],
            start_time=start_wall,
            attributes={
                "volley.model": model,
                "volley.model_version": version,
                "volley.batch_size": requests,
                "volley.batch_rows": rows,
                "volley.traced_requests": len(traces),
            },
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=end_wall)

    def flush(self, timeout_ms: int = 5000) -> bool:
        """Export every ended span now."""
        return self._provider.force_flush(timeout_ms) if self._provider is not None else True

    def shutdown(self) -> None:
        """Export what is left and stop the exporter."""
        if self._provider is not None:
            self._provider.shutdown()


#: Wall clock minus monotonic clock, taken once so that every span's times share one base.
_WALL_OFFSET_NS = time.time_ns() - time.monotonic_ns()


def wall_ns(monotonic: int) -> int:
    """The wall-clock time (ns since the epoch) of a ``time.monotonic_ns`` reading."""
    return monotonic + _WALL_OFFSET_NS
