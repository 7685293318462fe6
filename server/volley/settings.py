"""Server settings, declared once: ``VOLLEY_*`` environment variables and the serve flags.

Every field becomes a ``volley serve`` flag (``--field-name``) and an environment variable
(``VOLLEY_FIELD_NAME``); flags override the environment. ``cli.py`` builds its parser from
these fields and README's settings table is generated from them (``settings_table``).
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from volley.memory.budget import parse_budgets
from volley.serving.cache import parse_cache_config
from volley.telemetry.tracing import EXPORTERS, PROTOCOLS


class ControlMode(str, enum.Enum):
    """How the model repository is managed (Triton's ``--model-control-mode``)."""

    NONE = "none"
    POLL = "poll"
    EXPLICIT = "explicit"


class GrpcTransport(str, enum.Enum):
    """Which gRPC server serves the protocol."""

    #: The native transport when it can serve the settings, else grpcio.
    AUTO = "auto"
    #: HTTP/2 and gRPC framing on Rust threads outside the GIL (pygrpc-native).
    NATIVE = "native"
    #: grpcio's ``grpc.aio`` server.
    GRPCIO = "grpcio"


class LogFormat(str, enum.Enum):
    """How log lines are written."""

    TEXT = "text"
    JSON = "json"


class ServerSettings(BaseSettings):
    """Everything ``volley serve`` can be told. Validated once at start-up."""

    model_config = SettingsConfigDict(env_prefix="VOLLEY_", extra="forbid")

    model_repository: list[Path] = Field(
        default_factory=lambda: [Path("model_repository")],
        description="Model repository directory (Triton layout); repeatable.",
    )
    server_name: str = Field(
        "volley",
        min_length=1,
        description="The name ServerMetadata reports (set 'triton' for clients that check it).",
    )
    grpc_address: str = Field("0.0.0.0", description="Address the gRPC server binds.")
    grpc_port: int = Field(8001, ge=0, le=65535, description="gRPC port; 0 picks a free port.")
    grpc_transport: GrpcTransport = Field(
        GrpcTransport.AUTO,
        description="gRPC server: native (HTTP/2 outside the GIL), grpcio, or auto (native "
        "whenever it can serve the settings).",
    )
    grpc_use_ssl: bool = Field(False, description="Serve gRPC over TLS (selects grpcio).")
    grpc_server_cert: Path | None = Field(None, description="PEM certificate chain of the server.")
    grpc_server_key: Path | None = Field(None, description="PEM private key of the server.")
    grpc_root_cert: Path | None = Field(
        None, description="PEM root certificates that client certificates must chain to."
    )
    grpc_use_ssl_mutual: bool = Field(
        False, description="Require and verify a client certificate (mTLS; needs the root cert)."
    )
    grpc_restricted_protocol: list[str] = Field(
        default_factory=list,
        description="'<groups>:<key>=<value>': calls of these API groups need the header "
        "'triton-grpc-protocol-<key>: <value>'; repeatable. Groups: health, metadata, "
        "inference, shared-memory, model-config, model-repository, statistics, trace, logging.",
    )
    grpc_max_message_size: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        le=2**31 - 1,
        description="Largest gRPC message received or sent, in bytes.",
    )
    grpc_keepalive_time: int = Field(
        7_200_000, ge=1, description="Milliseconds between keepalive pings the server sends."
    )
    grpc_keepalive_timeout: int = Field(
        20_000, ge=1, description="Milliseconds the server waits for a keepalive ping's ack."
    )
    grpc_keepalive_permit_without_calls: bool = Field(
        False, description="Allow clients' keepalive pings on connections with no calls."
    )
    grpc_http2_max_pings_without_data: int = Field(
        2, ge=0, description="Pings the server sends without data before it must send data."
    )
    grpc_http2_min_recv_ping_interval_without_data: int = Field(
        300_000,
        ge=0,
        description="Minimum milliseconds between a client's pings without data; faster pings "
        "are strikes.",
    )
    grpc_http2_max_ping_strikes: int = Field(
        2, ge=0, description="Ping strikes before the connection is closed (0 = no limit)."
    )
    grpc_max_concurrent_streams: int = Field(
        0,
        ge=0,
        le=2**31 - 1,
        description="Calls one connection may have open at once (HTTP/2 streams; 0 = no limit).",
    )
    grpc_max_connections: int = Field(
        0,
        ge=0,
        le=2**31 - 1,
        description="Client connections accepted at once (0 = no limit; selects grpcio).",
    )
    grpc_max_connection_idle_ms: int = Field(
        0,
        ge=0,
        le=2**31 - 1,
        description="Close a connection idle this long (0 = never; selects grpcio).",
    )
    grpc_max_connection_age_ms: int = Field(
        0,
        ge=0,
        le=2**31 - 1,
        description="Close a connection this old, gracefully (0 = never; selects grpcio).",
    )
    allow_http: bool = Field(
        True, description="Serve the KServe v2 HTTP/REST protocol (Triton's binary extension)."
    )
    http_address: str = Field("0.0.0.0", description="Address the HTTP server binds.")
    http_port: int = Field(8000, ge=0, le=65535, description="HTTP port; 0 picks a free port.")
    allow_metrics: bool = Field(True, description="Serve Prometheus metrics over HTTP.")
    metrics_address: str = Field("0.0.0.0", description="Address the metrics server binds.")
    metrics_port: int = Field(
        8002, ge=0, le=65535, description="Port of GET /metrics; 0 picks a free port."
    )
    allow_gpu_metrics: bool = Field(
        True,
        description="Export GPU utilisation, memory and power (nv_gpu_*) when NVML finds a GPU.",
    )
    max_inflight_requests: int = Field(
        2048,
        ge=0,
        description="Inference requests in the server at once (all models, all transports); "
        "beyond it requests are refused at once with RESOURCE_EXHAUSTED; 0 = no cap.",
    )
    model_control_mode: ControlMode = Field(
        ControlMode.NONE,
        description="none: load every model at start; poll: also follow changes in the "
        "repository; explicit: RepositoryModelLoad/Unload.",
    )
    repository_poll_secs: float = Field(
        15.0, gt=0, description="Seconds between two scans of the repository in poll mode."
    )
    repository_settle_secs: float = Field(
        2.0,
        ge=0,
        description="A changed model is loaded only once none of its files changed for this "
        "long (a copy in progress is never loaded half-written).",
    )
    memory_budget: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="DEVICE=SIZE (cpu=2GiB, gpu0=20GiB): loads beyond it evict idle models, "
        "least recently used first; repeatable, or comma-separated in the environment. None = "
        "no budget.",
    )
    pin_model: list[str] = Field(
        default_factory=list,
        description="A model loaded at start and never evicted; repeatable.",
    )
    load_on_demand: bool = Field(
        True, description="A request for an evicted model loads it again (and waits)."
    )
    model_load_timeout_secs: float = Field(
        60.0, gt=0, description="How long requests wait for an evicted model to load again."
    )
    model_min_residency_secs: float = Field(
        5.0,
        ge=0,
        description="A model loaded for a waiting request is not evicted before it served a "
        "request or this long has passed (no thrash).",
    )
    model_load_thread_count: int = Field(
        4, ge=1, description="Threads that load models (off the event loop)."
    )
    load_model: list[str] = Field(
        default_factory=list,
        description="With explicit control: a model to load at start ('*' = all); repeatable.",
    )
    strict_readiness: bool = Field(
        True, description="ServerReady only when every model version is READY."
    )
    exit_timeout_secs: float = Field(
        30.0, ge=0, description="Grace period for in-flight requests when shutting down."
    )
    cache_config: list[str] = Field(
        default_factory=list,
        description="Response cache, as Triton's: local,size=BYTES (used by models whose "
        "config enables response_cache).",
    )
    strict_model_config: bool = Field(
        False, description="Disable auto-complete of model configs from the model files."
    )
    default_max_batch_size: int = Field(
        4, ge=0, description="max_batch_size given to auto-completed models that can batch."
    )
    inline_execution_us: int = Field(
        100,
        ge=0,
        description=(
            "Models whose batches execute faster than this (µs, on average) run them on the "
            "event-loop thread, skipping two thread hand-offs; 0 disables."
        ),
    )
    audit_log: str = Field(
        "",
        pattern="^(|request|response|all)$",
        description="Log requests, responses or all of every model to the audit sink (a "
        "model's 'volley.audit' config parameter overrides it; 'off' turns a model off).",
    )
    audit_log_sink: str = Field(
        "",
        description="Where audit records go: file:///dir (rotating JSON lines), "
        "http://host:port/path (CloudEvents), nats://host:port/subject.",
    )
    audit_log_sample_rate: float = Field(
        1.0, ge=0, le=1, description="Share of requests written to the audit log."
    )
    audit_log_max_tensor_bytes: int = Field(
        4096, ge=0, description="Tensor data kept per tensor in an audit record (then cut)."
    )
    audit_log_metadata: list[str] = Field(
        default_factory=list,
        description="Request metadata keys copied into audit records; repeatable.",
    )
    audit_log_queue_size: int = Field(
        10_000, ge=1, description="Records waiting for the sink before new ones are dropped."
    )
    monitor_sample_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of requests whose inputs feed drift and outlier monitoring (0 = off).",
    )
    monitor_window: int = Field(500, ge=10, description="Live rows a drift score is taken over.")
    monitor_reference_rows: int = Field(
        1000,
        ge=10,
        description="Rows of the first requests taken as the reference when a model folder has "
        "no reference.npz.",
    )
    drift_psi_threshold: float = Field(
        0.2, gt=0, description="Population stability index above which an input has drifted."
    )
    outlier_quantile: float = Field(
        0.999, gt=0.5, lt=1, description="Chi-square quantile beyond which a row is an outlier."
    )
    trace_exporter: str | None = Field(
        None,
        description="Where request traces go: none, otlp or console (default: "
        "OTEL_TRACES_EXPORTER, else none).",
    )
    trace_protocol: str | None = Field(
        None,
        description="OTLP protocol: grpc or http/protobuf (default: "
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL / OTEL_EXPORTER_OTLP_PROTOCOL, else grpc).",
    )
    trace_endpoint: str | None = Field(
        None,
        description="OTLP collector URL, e.g. http://127.0.0.1:4317 (default: "
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT).",
    )
    trace_sample_ratio: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Fraction of requests traced when the caller sent no sampled traceparent "
        "(default: OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG, else 1).",
    )
    trace_service_name: str | None = Field(
        None, description="service.name of the spans (default: OTEL_SERVICE_NAME, else volley)."
    )
    log_level: str = Field("INFO", description="Logging level: DEBUG, INFO, WARNING or ERROR.")
    log_format: LogFormat = Field(
        LogFormat.TEXT, description="Log lines as text or as JSON objects (one per line)."
    )
    log_requests: bool = Field(
        False,
        description="Log one line per inference request (model, version, id, status, "
        "duration; never tensor contents).",
    )
    use_uvloop: bool = Field(True, description="Run the event loop on uvloop when installed.")

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _split_budgets(cls, value: object) -> object:
        if isinstance(value, str):
            return [part for part in value.split(",") if part.strip()]
        return value

    @field_validator("memory_budget")
    @classmethod
    def _check_budgets(cls, value: list[str]) -> list[str]:
        parse_budgets(value)
        return value

    @field_validator("trace_exporter")
    @classmethod
    def _check_exporter(cls, value: str | None) -> str | None:
        if value is not None and value not in EXPORTERS:
            raise ValueError(f"expected one of {', '.join(EXPORTERS)}")
        return value

    @field_validator("trace_protocol")
    @classmethod
    def _check_protocol(cls, value: str | None) -> str | None:
        if value is not None and value not in PROTOCOLS:
            raise ValueError(f"expected one of {', '.join(PROTOCOLS)}")
        return value

    @field_validator("cache_config")
    @classmethod
    def _check_cache(cls, value: list[str]) -> list[str]:
        parse_cache_config(value)
        return value

    @model_validator(mode="after")
    def _check_tls(self) -> ServerSettings:
        if self.grpc_use_ssl and (self.grpc_server_cert is None or self.grpc_server_key is None):
            raise ValueError("--grpc-use-ssl needs --grpc-server-cert and --grpc-server-key")
        if self.grpc_use_ssl_mutual and (not self.grpc_use_ssl or self.grpc_root_cert is None):
            raise ValueError("--grpc-use-ssl-mutual needs --grpc-use-ssl and --grpc-root-cert")
        return self


def flag_name(field: str) -> str:
    """The command-line flag of a settings field."""
    return "--" + field.replace("_", "-")


def env_name(field: str) -> str:
    """The environment variable of a settings field."""
    return "VOLLEY_" + field.upper()


def settings_table() -> str:
    """README's table of every setting: flag, environment variable, default, meaning."""
    rows = ["| flag | env | default | meaning |", "| --- | --- | --- | --- |"]
    for name, info in ServerSettings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        if isinstance(default, enum.Enum):
            default = default.value
        if isinstance(default, list):
            default = ", ".join(str(d) for d in default)
        if isinstance(default, bool):
            default = str(default).lower()
        text = f"`{default}`" if default not in ("", None) else ""
        flag = flag_name(name)
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            flag += " " + "\\|".join(m.value for m in annotation)
        description = (info.description or "").replace("|", "\\|")
        rows.append(f"| `{flag}` | `{env_name(name)}` | {text} | {description} |")
    return "\n".join(rows) + "\n"
