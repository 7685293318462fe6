"""The codec: neutral requests validated and decoded against a spec; outputs encoded."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from multiprocessing import shared_memory

import numpy as np
import pytest

from volley.errors import InvalidArgument, Unimplemented
from volley.model.sequence import SequenceSpec
from volley.model.spec import ModelSpec, TensorSpec
from volley.serving import codec
from volley.serving.shm import SharedMemory
from volley.serving.types import (
    InferenceRequest,
    InputTensor,
    ParamValue,
    RequestedOutput,
)


def make_spec(max_batch_size: int = 8) -> ModelSpec:
    return ModelSpec(
        name="m",
        platform="onnxruntime_onnx",
        backend="onnxruntime",
        max_batch_size=max_batch_size,
        inputs=(TensorSpec("a", "FP32", (-1,)), TensorSpec("b", "INT32", (2,))),
        outputs=(
            TensorSpec("first", "FP32", (-1,)),
            TensorSpec("second", "INT32", (2,)),
            TensorSpec("third", "BYTES", (1,)),
        ),
        batching=None,
    )


BATCHED = make_spec(8)
UNBATCHED = make_spec(0)


def request(
    rows: int = 1,
    width: int = 3,
    *,
    spec: ModelSpec = BATCHED,
    parameters: dict[str, ParamValue] | None = None,
    outputs: list[RequestedOutput] | None = None,
    raw: bool = True,
) -> InferenceRequest:
    lead = [rows] if spec.max_batch_size > 0 else []
    a = np.arange(rows * width, dtype=np.float32) if lead else np.arange(width, dtype=np.float32)
    b = np.arange(len(a) // width * 2, dtype=np.int32) + 100
    a_shape, b_shape = [*lead, width], [*lead, 2]
    if raw:
        inputs = [
            InputTensor("a", "FP32", a_shape, raw=a.tobytes()),
            InputTensor("b", "INT32", b_shape, raw=b.tobytes()),
        ]
    else:
        inputs = [
            InputTensor("a", "FP32", a_shape, values=a.tolist()),
            InputTensor("b", "INT32", b_shape, values=b.tolist()),
        ]
    return InferenceRequest(
        model_name="m",
        model_version="",
        id="id-1",
        inputs=inputs,
        outputs=outputs or [],
        parameters=parameters or {},
        arrival_ns=12345,
    )


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "values"])
def test_decode_raw_and_values(raw: bool) -> None:
    decoded = codec.decode(request(rows=2, width=3, raw=raw), BATCHED)
    inputs = decoded.request.inputs
    assert sorted(inputs) == ["a", "b"]
    np.testing.assert_array_equal(inputs["a"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert inputs["a"].dtype == np.float32
    np.testing.assert_array_equal(inputs["b"], np.array([[100, 101], [102, 103]], np.int32))
    assert inputs["b"].dtype == np.int32
    assert decoded.request.rows == 2
    assert decoded.request.arrival_ns == 12345
    assert (decoded.request.priority, decoded.request.timeout_us) == (0, 0)
    assert decoded.outputs == []


def test_decode_raw_is_a_view_without_copy() -> None:
    req = request(rows=1)
    decoded = codec.decode(req, BATCHED)
    assert not decoded.request.inputs["a"].flags.writeable


def test_rows_of_unbatched_model_is_one() -> None:
    decoded = codec.decode(request(width=5, spec=UNBATCHED), UNBATCHED)
    assert decoded.request.rows == 1
    assert decoded.request.inputs["a"].shape == (5,)


def test_shape_key_same_for_same_non_batch_shapes() -> None:
    one = codec.decode(request(rows=1, width=3), BATCHED).request.shape_key
    four = codec.decode(request(rows=4, width=3), BATCHED).request.shape_key
    assert one == four
    assert hash(one) == hash(four)


def test_shape_key_differs_for_different_shapes() -> None:
    three = codec.decode(request(rows=2, width=3), BATCHED).request.shape_key
    five = codec.decode(request(rows=2, width=5), BATCHED).request.shape_key
    assert three != five


def test_shape_key_of_unbatched_model_includes_every_dim() -> None:
    key3 = codec.decode(request(width=3, spec=UNBATCHED), UNBATCHED).request.shape_key
    key4 = codec.decode(request(width=4, spec=UNBATCHED), UNBATCHED).request.shape_key
    assert key3 != key4


def test_shape_key_depends_on_input_names_not_just_dims() -> None:
    spec = ModelSpec(
        name="m",
        platform="onnxruntime_onnx",
        backend="onnxruntime",
        max_batch_size=4,
        inputs=(
            TensorSpec("p", "FP32", (2,), optional=True),
            TensorSpec("q", "FP32", (2,), optional=True),
        ),
        outputs=(TensorSpec("y", "FP32", (2,)),),
        batching=None,
    )
    raw = np.zeros((1, 2), np.float32).tobytes()
    with_p = InferenceRequest("m", "", "", [InputTensor("p", "FP32", [1, 2], raw=raw)])
    with_q = InferenceRequest("m", "", "", [InputTensor("q", "FP32", [1, 2], raw=raw)])
    assert (
        codec.decode(with_p, spec).request.shape_key != codec.decode(with_q, spec).request.shape_key
    )


def test_priority_and_timeout_parameters() -> None:
    decoded = codec.decode(request(parameters={"priority": 2, "timeout": 1500}), BATCHED)
    assert decoded.request.priority == 2
    assert decoded.request.timeout_us == 1500


@pytest.mark.parametrize("value", [-1, 1.5, "1", True])
@pytest.mark.parametrize("key", ["priority", "timeout"])
def test_bad_priority_or_timeout(key: str, value: ParamValue) -> None:
    with pytest.raises(InvalidArgument, match=f"parameter '{key}' must be a non-negative integer"):
        codec.decode(request(parameters={key: value}), BATCHED)


@pytest.mark.parametrize("key", ["sequence_id", "sequence_start", "sequence_end"])
def test_sequence_parameters_are_ignored_without_sequence_batching(key: str) -> None:
    decoded = codec.decode(request(parameters={key: 1}), BATCHED)  # as Triton does
    assert decoded.request.sequence_id == 0


SEQUENCE = dataclasses.replace(
    BATCHED, sequence=SequenceSpec("direct", 10**9, controls=(), states=())
)


def test_sequence_parameters_of_a_sequence_model() -> None:
    params: dict[str, ParamValue] = {"sequence_id": 42, "sequence_start": True}
    decoded = codec.decode(request(parameters=params), SEQUENCE)
    assert decoded.request.sequence_id == 42 and decoded.request.sequence_start
    assert not decoded.request.sequence_end
    named = codec.decode(
        request(parameters={"sequence_id": "user-7", "sequence_end": True}), SEQUENCE
    )
    assert named.request.sequence_id == "user-7" and named.request.sequence_end


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({}, "non-zero or non-empty correlation ID"),
        ({"sequence_id": ""}, "non-zero or non-empty correlation ID"),
        ({"sequence_id": -3}, "unsigned integer or a string"),
        ({"sequence_id": 1.5}, "unsigned integer or a string"),
        ({"sequence_id": 1, "sequence_start": 1}, "'sequence_start' must be a boolean"),
    ],
)
def test_bad_sequence_parameters(params: dict[str, ParamValue], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        codec.decode(request(parameters=params), SEQUENCE)


@pytest.mark.parametrize("key", ["headers", "binary_data_output", "triton_enable_empty_final"])
def test_reserved_parameters(key: str) -> None:
    with pytest.raises(InvalidArgument, match=f"'{key}'"):
        codec.decode(request(parameters={key: 1}), BATCHED)


def test_unknown_parameters_are_ignored() -> None:
    decoded = codec.decode(request(parameters={"my_tag": "x"}), BATCHED)
    assert decoded.request.priority == 0


def test_requested_outputs_keep_request_order() -> None:
    wanted = [RequestedOutput("third"), RequestedOutput("first")]
    assert codec.decode(request(outputs=wanted), BATCHED).outputs == ["third", "first"]


def test_unknown_requested_output() -> None:
    with pytest.raises(InvalidArgument, match="unexpected inference output 'nope'"):
        codec.decode(request(outputs=[RequestedOutput("nope")]), BATCHED)


@pytest.mark.parametrize(
    "parameters",
    [{"classification": 2}, {"shared_memory_region": "r", "shared_memory_byte_size": 8}],
)
def test_unsupported_output_parameters(parameters: dict[str, ParamValue]) -> None:
    with pytest.raises(Unimplemented):
        codec.decode(request(outputs=[RequestedOutput("first", parameters)]), BATCHED)


def test_missing_data() -> None:
    req = request()
    req.inputs[1].raw = None
    with pytest.raises(InvalidArgument, match="unable to find data for input tensor 'b'"):
        codec.decode(req, BATCHED)


def test_wrong_input_count_names_missing_inputs() -> None:
    req = request()
    del req.inputs[1]
    with pytest.raises(InvalidArgument, match=r"expected 2 inputs but got 1 .*missing \['b'\]"):
        codec.decode(req, BATCHED)


def test_unknown_and_duplicate_inputs() -> None:
    req = request()
    req.inputs[1].name = "zzz"
    with pytest.raises(InvalidArgument, match="unexpected inference input 'zzz'"):
        codec.decode(req, BATCHED)
    req = request()
    req.inputs[1] = req.inputs[0]
    with pytest.raises(InvalidArgument, match="more than once"):
        codec.decode(req, BATCHED)


def test_wrong_datatype() -> None:
    req = request()
    req.inputs[0].datatype = "FP64"
    with pytest.raises(InvalidArgument, match="data-type is 'FP64', but model 'm' expects 'FP32'"):
        codec.decode(req, BATCHED)


def test_batch_sizes_must_agree_and_fit() -> None:
    req = request(rows=2)
    req.inputs[1].shape = [3, 2]
    with pytest.raises(InvalidArgument, match="batch size 3 does not match"):
        codec.decode(req, BATCHED)
    with pytest.raises(InvalidArgument, match="batch-size must be <= 8"):
        codec.decode(request(rows=9), BATCHED)


def test_byte_size_mismatch() -> None:
    req = request()
    req.inputs[0].raw = b"\x00" * 5
    with pytest.raises(InvalidArgument, match="byte size mismatch"):
        codec.decode(req, BATCHED)


@pytest.mark.parametrize(
    ("parameters", "match"),
    [
        ({"shared_memory_region": "region"}, "shared_memory_byte_size"),
        ({"shared_memory_region": 3, "shared_memory_byte_size": 4}, "region name"),
        ({"shared_memory_region": "r", "shared_memory_byte_size": 4, "shared_memory_offset": -1},
         "shared_memory_offset"),
    ],
)  # fmt: skip
def test_malformed_shared_memory_parameters(parameters: dict[str, ParamValue], match: str) -> None:
    req = request()
    req.inputs[0].raw = None
    req.inputs[0].parameters = parameters
    with pytest.raises(InvalidArgument, match=match):
        codec.decode(req, BATCHED, SharedMemory())


@pytest.fixture
def region() -> Iterator[tuple[SharedMemory, memoryview]]:
    block = shared_memory.SharedMemory(create=True, size=256)
    regions = SharedMemory()
    regions.register("r", "/" + block.name.lstrip("/"), 0, 256)
    yield regions, block.buf
    regions.close()
    block.close()
    block.unlink()


def test_inputs_and_outputs_in_shared_memory(region: tuple[SharedMemory, memoryview]) -> None:
    regions, buf = region
    req = request()
    first = req.inputs[0]
    buf[16:28] = np.array([[0.25, 0.5, 1.0]], np.float32).tobytes()
    first.raw = None
    first.parameters = {
        "shared_memory_region": "r",
        "shared_memory_offset": 16,
        "shared_memory_byte_size": 12,
    }
    req.outputs = [
        RequestedOutput(
            "second",
            {"shared_memory_region": "r", "shared_memory_byte_size": 8, "shared_memory_offset": 64},
        ),
        RequestedOutput("first"),
    ]
    decoded = codec.decode(req, BATCHED, regions)
    assert decoded.request.inputs["a"].tolist() == [[0.25, 0.5, 1.0]]
    assert decoded.shm_outputs == {"second": ("r", 64, 8)}
    response = codec.encode(
        BATCHED, "1", "", arrays(), decoded.outputs, decoded.shm_outputs, regions
    )
    second, first_out = response.outputs
    assert second.shm == {
        "shared_memory_region": "r",
        "shared_memory_offset": 64,
        "shared_memory_byte_size": 8,
    }
    assert np.frombuffer(buf[64:72], np.int32).tolist() == [1, 2]
    assert first_out.shm is None

    too_small = {"second": ("r", 64, 4)}
    with pytest.raises(InvalidArgument, match="too small"):
        codec.encode(BATCHED, "1", "", arrays(), ["second"], too_small, regions)
    first.raw = b"\0\0\0\0"
    with pytest.raises(InvalidArgument, match="also carries data"):
        codec.decode(req, BATCHED, regions)
    first.raw = None
    first.parameters["shared_memory_byte_size"] = 8
    with pytest.raises(InvalidArgument, match="input 'a'"):
        codec.decode(req, BATCHED, regions)


def arrays() -> dict[str, np.ndarray]:
    return {
        "second": np.array([[1, 2]], np.int32),
        "third": np.array([[b"x"]], dtype=object),
        "first": np.array([[0.5]], np.float32),
    }


def test_encode_every_output_in_config_order() -> None:
    outputs = arrays()
    response = codec.encode(BATCHED, "3", "rid", outputs, [])
    assert (response.model_name, response.model_version, response.id) == ("m", "3", "rid")
    assert [(o.name, o.datatype) for o in response.outputs] == [
        ("first", "FP32"),
        ("second", "INT32"),
        ("third", "BYTES"),
    ]
    for out in response.outputs:
        assert out.array is outputs[out.name]


def test_encode_requested_outputs_only_in_request_order() -> None:
    response = codec.encode(BATCHED, "1", "", arrays(), ["third", "first"])
    assert [(o.name, o.datatype) for o in response.outputs] == [
        ("third", "BYTES"),
        ("first", "FP32"),
    ]
