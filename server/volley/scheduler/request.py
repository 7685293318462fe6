"""The request and result types that cross from the frontend into a scheduler."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from volley.telemetry.tracing import RequestTrace

#: Output tensors of one request, by output name.
Outputs = dict[str, np.ndarray]


@dataclass(slots=True, eq=False)
class InferRequest:
    """A decoded, validated inference request for one model version."""

    #: Input tensors by name, full shapes (batch dimension included for batching models).
    inputs: dict[str, np.ndarray]
    #: Rows along the batch dimension (1 for models that do not batch).
    rows: int
    #: Requests may share a batch only if their keys are equal (non-batch shapes, input set).
    shape_key: Hashable
    #: Requested priority (0 = the model's default level).
    priority: int = 0
    #: Requested queue timeout in microseconds (0 = the queue policy's default).
    timeout_us: int = 0
    #: ``time.monotonic_ns()`` when the request arrived.
    arrival_ns: int = 0
    #: The request's span when it is traced (queue and batch spans hang off it).
    trace: RequestTrace | None = None
    #: Sequence models: the correlation id and the start/end flags of the request.
    sequence_id: int | str = 0
    sequence_start: bool = False
    sequence_end: bool = False
