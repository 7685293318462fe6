"""gRPC messages through the codec: every v2 datatype round-trips raw and typed; bad input fails."""

from __future__ import annotations

import numpy as np
import pytest

from volley._proto.inference import grpc_service_pb2 as pb
from volley.errors import InvalidArgument, Status
from volley.frontend.grpc import convert
from volley.model import dtypes, tensors
from volley.model.spec import ModelSpec, TensorSpec
from volley.serving import codec

FIXED = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BF16",
]


def from_contents(
    datatype: str, shape: list[int], contents: pb.InferTensorContents, name: str
) -> np.ndarray:
    values = convert.contents_values(datatype, contents, name)
    return tensors.from_values(datatype, shape, values, name)


def decode(msg: pb.ModelInferRequest, spec: ModelSpec, arrival_ns: int) -> codec.Decoded:
    return codec.decode(convert.request_from_pb(msg, arrival_ns), spec)


def sample(datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(3)
    if datatype == "BYTES":
        flat = np.array(
            [f"elem-{i}".encode() * (i % 3) for i in range(int(np.prod(shape)))], dtype=object
        )
        return flat.reshape(shape)
    if datatype == "BOOL":
        return rng.integers(0, 2, shape).astype(bool)
    dt = dtypes.NUMPY[datatype]
    if dt.kind == "f":
        return rng.standard_normal(shape).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, shape, dtype=dt, endpoint=True)


def spec_for(datatype: str, dims: tuple[int, ...], max_batch: int = 8) -> ModelSpec:
    return ModelSpec(
        name="m",
        platform="onnxruntime_onnx",
        backend="onnxruntime",
        max_batch_size=max_batch,
        inputs=(TensorSpec("X", datatype, dims),),
        outputs=(TensorSpec("Y", datatype, dims),),
        batching=None,
    )


@pytest.mark.parametrize("datatype", [*FIXED, "BYTES"])
def test_raw_round_trip_every_datatype(datatype: str) -> None:
    array = sample(datatype, (2, 3))
    raw = tensors.to_raw(array, datatype)
    back = tensors.from_raw(datatype, [2, 3], raw, "X")
    assert back.shape == (2, 3)
    np.testing.assert_array_equal(back, array)
    if datatype != "BYTES":
        assert len(raw) == 6 * dtypes.ITEMSIZE[datatype]


def test_raw_decode_is_zero_copy() -> None:
    array = np.arange(12, dtype=np.float32)
    raw = array.tobytes()
    view = tensors.from_raw("FP32", [3, 4], raw, "X")
    assert not view.flags.writeable
    assert view.base is not None and np.shares_memory(view, np.frombuffer(raw, np.float32))


@pytest.mark.parametrize("datatype", [d for d in FIXED if d not in ("FP16", "BF16")] + ["BYTES"])
def test_typed_contents_round_trip(datatype: str) -> None:
    array = sample(datatype, (2, 2))
    contents = pb.InferTensorContents()
    field = getattr(contents, convert.CONTENTS_FIELD[datatype])
    field.extend(array.reshape(-1).tolist())
    back = from_contents(datatype, [2, 2], contents, "X")
    assert back.dtype == dtypes.NUMPY[datatype]
    np.testing.assert_array_equal(back, array)


def test_bytes_framing_matches_the_protocol_example() -> None:
    raw = tensors.serialize_bytes(np.array([b"hi", b""], dtype=object))
    assert raw == bytes.fromhex("02000000686900000000")


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (bytes.fromhex("0500000068"), "declares 5 bytes"),
        (bytes.fromhex("020000006869ff"), "trailing"),
        (bytes.fromhex("0200"), "need at least"),
    ],
)
def test_malformed_bytes_are_rejected(raw: bytes, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        tensors.from_raw("BYTES", [1], raw, "X")


def test_wrong_typed_field_is_rejected() -> None:
    contents = pb.InferTensorContents(fp32_contents=[1.0, 2.0])
    with pytest.raises(InvalidArgument, match="expected int_contents"):
        from_contents("INT32", [2], contents, "X")


def test_fp16_has_no_typed_field() -> None:
    with pytest.raises(InvalidArgument, match="raw_input_contents"):
        from_contents("FP16", [1], pb.InferTensorContents(), "X")


def test_small_ints_are_narrowed_to_low_order_bytes() -> None:
    contents = pb.InferTensorContents(int_contents=[257, -1])
    np.testing.assert_array_equal(from_contents("INT8", [2], contents, "X"), [1, -1])


def request(datatype: str, shape: list[int], raw: bytes, **kw: object) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="m", **kw)  # type: ignore[arg-type]
    msg.inputs.add(name="X", datatype=datatype, shape=shape)
    msg.raw_input_contents.append(raw)
    return msg


def test_decode_valid_request() -> None:
    spec = spec_for("FP32", (4,))
    data = np.ones((3, 4), np.float32)
    decoded = decode(request("FP32", [3, 4], data.tobytes()), spec, 0)
    assert decoded.request.rows == 3
    np.testing.assert_array_equal(decoded.request.inputs["X"], data)


@pytest.mark.parametrize(
    ("datatype", "shape", "nbytes", "fragment"),
    [
        ("INT32", [1, 4], 16, "data-type is 'INT32', but model 'm' expects 'FP32'"),
        ("FP32", [1, 5], 20, r"Expected \[-1, 4\], got \[1, 5\]"),
        ("FP32", [4], 16, "unexpected shape"),
        ("FP32", [9, 4], 144, "batch-size must be <= 8"),
        ("FP32", [0, 4], 0, "batch-size"),
        ("FP32", [1, -1], 16, "All input dimensions should be specified"),
        ("FP32", [2, 4], 16, "expected 32 bytes"),
    ],
)
def test_decode_rejects_bad_input(
    datatype: str, shape: list[int], nbytes: int, fragment: str
) -> None:
    with pytest.raises(InvalidArgument, match=fragment) as info:
        decode(request(datatype, shape, b"\0" * nbytes), spec_for("FP32", (4,)), 0)
    assert info.value.code is Status.INVALID_ARGUMENT
    assert "'X'" in info.value.message or "'m'" in info.value.message


def test_decode_rejects_unknown_and_missing_inputs() -> None:
    spec = spec_for("FP32", (4,))
    msg = pb.ModelInferRequest(model_name="m")
    msg.inputs.add(name="Z", datatype="FP32", shape=[1, 4])
    msg.raw_input_contents.append(b"\0" * 16)
    with pytest.raises(InvalidArgument, match="unexpected inference input 'Z'"):
        decode(msg, spec, 0)
    with pytest.raises(InvalidArgument, match="expected 1 inputs but got 0"):
        decode(pb.ModelInferRequest(model_name="m"), spec, 0)


def test_decode_rejects_mixed_raw_and_typed() -> None:
    msg = request("FP32", [1, 4], b"\0" * 16)
    msg.inputs[0].contents.fp32_contents.extend([0.0] * 4)
    with pytest.raises(InvalidArgument, match="contents field must not be specified"):
        decode(msg, spec_for("FP32", (4,)), 0)


def test_decode_parameters() -> None:
    msg = request("FP32", [1, 4], b"\0" * 16)
    msg.parameters["priority"].uint64_param = 2
    msg.parameters["timeout"].int64_param = 500
    msg.parameters["custom"].string_param = "x"
    decoded = decode(msg, spec_for("FP32", (4,)), 0)
    assert (decoded.request.priority, decoded.request.timeout_us) == (2, 500)
    msg.parameters["custom"].uint64_param = 1
    with pytest.raises(InvalidArgument, match="uint64_param is only accepted"):
        decode(msg, spec_for("FP32", (4,)), 0)
    del msg.parameters["custom"]
    msg.parameters["triton_x"].bool_param = True
    with pytest.raises(InvalidArgument, match="reserved prefix"):
        decode(msg, spec_for("FP32", (4,)), 0)
    del msg.parameters["triton_x"]
    msg.parameters["sequence_id"].uint64_param = 3  # tritonclient's spelling; ignored here
    decode(msg, spec_for("FP32", (4,)), 0)


def test_requested_outputs_and_encode() -> None:
    spec = spec_for("FP32", (4,))
    msg = request("FP32", [1, 4], b"\0" * 16)
    msg.outputs.add(name="Y")
    decoded = decode(msg, spec, 0)
    assert decoded.outputs == ["Y"]
    out = np.arange(4, dtype=np.float32).reshape(1, 4)
    response = convert.response_to_pb(codec.encode(spec, "3", "req-1", {"Y": out}, decoded.outputs))
    assert (response.model_name, response.model_version, response.id) == ("m", "3", "req-1")
    assert list(response.outputs[0].shape) == [1, 4]
    assert response.outputs[0].datatype == "FP32"
    np.testing.assert_array_equal(
        np.frombuffer(response.raw_output_contents[0], np.float32), out[0]
    )
    msg.outputs.add(name="NOPE")
    with pytest.raises(InvalidArgument, match="unexpected inference output 'NOPE'"):
        decode(msg, spec, 0)


def test_typed_contents_beside_raw_contents_is_reported_as_triton_does() -> None:
    """Triton's explicit-contents example: two typed inputs, then one raw entry added."""
    msg = pb.ModelInferRequest(model_name="simple")
    for name in ("INPUT0", "INPUT1"):
        tensor = msg.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        tensor.contents.int_contents.extend(range(16))
    msg.raw_input_contents.append(bytes(32))
    with pytest.raises(InvalidArgument) as info:
        decode(msg, spec_for("INT32", (16,)), 0)
    assert info.value.message == (
        "contents field must not be specified when using raw_input_contents for 'INPUT0' "
        "for model 'simple'"
    )
