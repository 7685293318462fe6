"""Server settings: ``VOLLEY_*`` environment variables, overridden by command-line flags."""

from __future__ import annotations

import enum
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ControlMode(str, enum.Enum):
    """How the model repository is managed (Triton's ``--model-control-mode``)."""

    NONE = "none"
    POLL = "poll"
    EXPLICIT = "explicit"


class ServerSettings(BaseSettings):
    """Everything ``volley serve`` can be told. Validated once at start-up."""

    model_config = SettingsConfigDict(env_prefix="VOLLEY_", extra="forbid")

    model_repository: list[Path] = Field(
        default_factory=lambda: [Path("model_repository")],
        description="Model repository directories (Triton layout).",
    )
    grpc_address: str = Field("0.0.0.0", description="Address the gRPC server binds.")
    grpc_port: int = Field(8001, ge=0, le=65535, description="gRPC port; 0 picks a free port.")
    model_control_mode: ControlMode = Field(
        ControlMode.NONE, description="none: load all at start; poll; explicit."
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
            "Models whose batches execute faster than this on average run them on the event-loop "
            "thread, skipping two thread hand-offs that cost more than the work; 0 disables."
        ),
    )
    log_level: str = Field("INFO", description="Logging level of the volley loggers.")
    use_uvloop: bool = Field(True, description="Run the event loop on uvloop when installed.")
