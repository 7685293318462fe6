"""Protocol-neutral values that every transport converts its messages to and from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from volley.telemetry.tracing import RequestTrace

#: A request or tensor parameter's value, as plain Python (the protocol's bool/int/str/float).
ParamValue = bool | int | str | float


@dataclass(slots=True, eq=False)
class InputTensor:
    """One input of a request, as it came: exactly one of ``raw`` and ``values`` is set."""

    name: str
    datatype: str
    shape: list[int]
    #: Little-endian tensor bytes (BYTES: 4-byte length-prefixed elements).
    raw: bytes | memoryview | None = None
    #: A flat list of typed values (BYTES: ``bytes`` or ``str``).
    values: Sequence[Any] | None = None
    parameters: dict[str, ParamValue] | None = None


@dataclass(slots=True, eq=False)
class RequestedOutput:
    """An output the client asked for, with its parameters."""

    name: str
    parameters: dict[str, ParamValue] | None = None


@dataclass(slots=True, eq=False)
class InferenceRequest:
    """A ``ModelInfer`` request in transport-free form."""

    model_name: str
    model_version: str
    id: str
    inputs: list[InputTensor]
    #: ``time.monotonic_ns()`` when the transport received the request.
    arrival_ns: int = 0
    #: The outputs asked for; None = every output of the model.
    outputs: list[RequestedOutput] | None = None
    parameters: dict[str, ParamValue] | None = None
    #: Request metadata the service asked transports to keep (``header_keys``).
    headers: dict[str, str] | None = None
    #: The request's server span when it is traced (the service ends it).
    trace: RequestTrace | None = None


class OutputTensor(NamedTuple):
    """One output of a response."""

    name: str
    datatype: str
    array: np.ndarray
    #: Set when the output was written into a shared memory region: its parameters
    #: (``shared_memory_region``, ``shared_memory_offset``, ``shared_memory_byte_size``).
    shm: dict[str, ParamValue] | None = None


@dataclass(slots=True, eq=False)
class InferenceResponse:
    """A ``ModelInfer`` response in transport-free form."""

    model_name: str
    model_version: str
    id: str
    outputs: list[OutputTensor]


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    """An input or output as ``ModelMetadata`` reports it."""

    name: str
    datatype: str
    shape: list[int]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """What ``ModelMetadata`` returns."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    #: Version labels (``traffic.yaml``): label -> version.
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    """What ``ServerMetadata`` returns."""

    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One row of ``RepositoryIndex``: a model (and version) with its state."""

    name: str
    version: str = ""
    state: str = ""
    reason: str = ""
