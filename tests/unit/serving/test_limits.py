"""Request limits: duplicated outputs are refused, every queue has a bound."""

from __future__ import annotations

import pytest

from volley.errors import InvalidArgument
from volley.model.spec import ModelSpec, TensorSpec
from volley.scheduler.queue import DEFAULT_MAX_QUEUE_SIZE, QueueSettings
from volley.scheduler.request import InferRequest
from volley.serving import codec
from volley.serving.types import InferenceRequest, InputTensor, RequestedOutput

SPEC = ModelSpec(
    name="m",
    platform="onnxruntime_onnx",
    backend="onnxruntime",
    max_batch_size=0,
    inputs=(TensorSpec("X", "FP32", (2,)),),
    outputs=(TensorSpec("Y", "FP32", (2,)),),
    batching=None,
)


def test_duplicated_requested_outputs_are_refused() -> None:
    request = InferenceRequest(
        "m", "", "", [InputTensor("X", "FP32", [2], values=[1.0, 2.0])], 0,
        outputs=[RequestedOutput("Y"), RequestedOutput("Y")],
    )  # fmt: skip
    with pytest.raises(InvalidArgument, match="requested more than once"):
        codec.decode(request, SPEC)


def test_a_model_without_batching_has_a_bounded_queue() -> None:
    queue = QueueSettings(SPEC).queue
    request = InferRequest(inputs={}, rows=1, shape_key=())
    accepted = sum(queue.push(i, 1, 0, 0, 0, 0) for i in range(DEFAULT_MAX_QUEUE_SIZE + 5))
    assert accepted == DEFAULT_MAX_QUEUE_SIZE
    assert request.rows == 1
