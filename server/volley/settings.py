"""Server settings, declared once: ``VOLLEY_*`` environment variables and the serve flags.

Every field becomes a ``volley serve`` flag (``--field-name``) and an environment variable
(``VOLLEY_FIELD_NAME``); flags override the environment. ``cli.py`` builds its parser from
these fields and README's settings table is generated from them (``settings_table``).
"""

from __future__ import annotations

import enum
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ControlMode(str, enum.Enum):
    """How the model repository is managed (Triton's ``--model-control-mode``)."""

    NONE = "none"
    EXPLICIT = "explicit"


class GrpcTransport(str, enum.Enum):
    """Which gRPC server serves the protocol."""

    #: The native transport when it can serve the settings, else grpcio.
    AUTO = "auto"
    #: HTTP/2 and gRPC framing on Rust threads outside the GIL (pygrpc-native).
    NATIVE = "native"
    #: grpcio's ``grpc.aio`` server.
    GRPCIO = "grpcio"


class ServerSettings(BaseSettings):
    """Everything ``volley serve`` can be told. Validated once at start-up."""

    model_config = SettingsConfigDict(env_prefix="VOLLEY_", extra="forbid")

    model_repository: list[Path] = Field(
        default_factory=lambda: [Path("model_repository")],
        description="Model repository directory (Triton layout); repeatable.",
    )
    grpc_address: str = Field("0.0.0.0", description="Address the gRPC server binds.")
    grpc_port: int = Field(8001, ge=0, le=65535, description="gRPC port; 0 picks a free port.")
    grpc_transport: GrpcTransport = Field(
        GrpcTransport.AUTO,
        description="gRPC server: native (HTTP/2 outside the GIL), grpcio, or auto (native "
        "whenever it can serve the settings).",
    )
    model_control_mode: ControlMode = Field(
        ControlMode.NONE,
        description="none: load every model at start; explicit: RepositoryModelLoad/Unload.",
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
    log_level: str = Field("INFO", description="Logging level: DEBUG, INFO, WARNING or ERROR.")
    use_uvloop: bool = Field(True, description="Run the event loop on uvloop when installed.")


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
