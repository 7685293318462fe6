"""volley perf: request inputs from metadata, seeded random data, zeros and data files."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from volley_perf.errors import PerfError
from volley_perf.inputs import (
    InputOptions,
    encode,
    prepare_inputs,
    serialize_request,
)
from volley_perf.target import ModelInfo, TensorMeta

from volley._proto.inference import grpc_service_pb2 as pb

DENSE = ModelInfo(
    name="dense",
    version="",
    max_batch_size=32,
    inputs=(TensorMeta("INPUT", "FP32", (-1, 64)),),
    outputs=(TensorMeta("PROBS", "FP32", (-1, 10)),),
)
SIMPLE = ModelInfo(
    name="simple",
    version="1",
    max_batch_size=4,
    inputs=(TensorMeta("INPUT0", "INT32", (-1, 16)), TensorMeta("INPUT1", "INT32", (-1, 16))),
    outputs=(TensorMeta("OUTPUT0", "INT32", (-1, 16)),),
)
TEXT = ModelInfo(
    name="text",
    version="",
    max_batch_size=0,
    inputs=(TensorMeta("TEXT", "BYTES", (-1,)), TensorMeta("IDS", "INT64", (-1,))),
    outputs=(TensorMeta("IDS_SUM", "INT64", (1,)),),
)
IMAGE = ModelInfo(
    name="image",
    version="",
    max_batch_size=8,
    inputs=(TensorMeta("IMG", "FP16", (-1, 3, -1, -1)),),
    outputs=(),
)


def _decode_bytes(raw: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(raw):
        (n,) = struct.unpack_from("<I", raw, pos)
        out.append(raw[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def test_random_is_seeded_and_reproducible() -> None:
    a = prepare_inputs(SIMPLE, InputOptions(seed=7, batch_size=2))
    b = prepare_inputs(SIMPLE, InputOptions(seed=7, batch_size=2))
    c = prepare_inputs(SIMPLE, InputOptions(seed=8, batch_size=2))
    assert a.requests == b.requests
    assert a.requests != c.requests
    (tensors,) = a.requests
    assert [t.shape for t in tensors] == [(2, 16), (2, 16)]
    values = np.frombuffer(tensors[0].raw, dtype="<i4")
    assert values.size == 32 and values.min() >= 0 and values.max() < 100
    assert a.notes == []


def test_random_floats_and_batch() -> None:
    (tensors,) = prepare_inputs(DENSE, InputOptions(batch_size=8)).requests
    values = np.frombuffer(tensors[0].raw, dtype="<f4")
    assert tensors[0].shape == (8, 64) and values.size == 512
    assert values.min() >= 0 and values.max() < 1 and len(np.unique(values)) > 400


def test_zero() -> None:
    (tensors,) = prepare_inputs(DENSE, InputOptions(data="zero", batch_size=3)).requests
    assert tensors[0].raw == bytes(3 * 64 * 4)
    (text, ids) = prepare_inputs(TEXT, InputOptions(data="zero", shapes={"TEXT": [2]})).requests[0]
    assert _decode_bytes(text.raw) == [b"", b""]
    assert ids.raw == bytes(8)


def test_bytes_inputs_get_random_short_strings() -> None:
    prepared = prepare_inputs(TEXT, InputOptions(shapes={"TEXT": [5], "IDS": [3]}, seed=3))
    text, ids = prepared.requests[0]
    assert text.shape == (5,) and ids.shape == (3,)
    strings = _decode_bytes(text.raw)
    assert len(strings) == 5
    assert all(1 <= len(s) <= 8 and s.isalpha() and s.islower() for s in strings)
    again = prepare_inputs(TEXT, InputOptions(shapes={"TEXT": [5], "IDS": [3]}, seed=3))
    assert again.requests == prepared.requests


def test_dynamic_dims_default_to_one_with_a_note() -> None:
    prepared = prepare_inputs(TEXT, InputOptions())
    assert [t.shape for t in prepared.requests[0]] == [(1,), (1,)]
    assert len(prepared.notes) == 2 and "--shape TEXT:" in prepared.notes[0]


def test_shape_flag_fills_dynamic_dims_after_the_batch_dim() -> None:
    opts = InputOptions(batch_size=2, shapes={"IMG": [3, 4, 5]})
    (img,) = prepare_inputs(IMAGE, opts).requests[0]
    assert img.shape == (2, 3, 4, 5) and len(img.raw) == 2 * 60 * 2


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        ({"IMG": [4, 4, 5]}, "does not match"),
        ({"IMG": [3, 4]}, "does not match"),
        ({"NOPE": [1]}, "no input 'NOPE'"),
    ],
)
def test_bad_shape_flag(shapes: dict[str, list[int]], match: str) -> None:
    with pytest.raises(PerfError, match=match):
        prepare_inputs(IMAGE, InputOptions(shapes=shapes))


def test_batch_size_limits() -> None:
    with pytest.raises(PerfError, match="max_batch_size 4"):
        prepare_inputs(SIMPLE, InputOptions(batch_size=5))
    with pytest.raises(PerfError, match="does not batch"):
        prepare_inputs(TEXT, InputOptions(batch_size=2))
    with pytest.raises(PerfError, match="at least 1"):
        prepare_inputs(SIMPLE, InputOptions(batch_size=0))


def test_without_model_config_the_batch_size_fills_a_leading_dynamic_dim() -> None:
    unknown = ModelInfo(
        name="m",
        version="",
        max_batch_size=None,
        inputs=(TensorMeta("X", "FP32", (-1, 4)),),
        outputs=(),
    )
    (x,) = prepare_inputs(unknown, InputOptions(batch_size=3)).requests[0]
    assert x.shape == (3, 4)


def test_json_data_file(tmp_path: Path) -> None:
    data = {
        "data": [
            {"INPUT0": list(range(16)), "INPUT1": {"content": [1] * 16, "shape": [16]}},
            {
                "INPUT0": [[2] * 8, [3] * 8],
                "INPUT1": {"b64": base64.b64encode(np.full(16, 9, "<i4").tobytes()).decode()},
            },
        ]
    }
    path = tmp_path / "data.json"
    path.write_text(json.dumps(data))
    prepared = prepare_inputs(SIMPLE, InputOptions(data=str(path)))
    assert len(prepared.requests) == 2
    first, second = prepared.requests
    assert first[0].shape == (1, 16)
    assert np.frombuffer(first[0].raw, "<i4").tolist() == list(range(16))
    assert np.frombuffer(second[1].raw, "<i4").tolist() == [9] * 16
    # batch 2: request r stacks entries r and r+1 (cyclically)
    batched = prepare_inputs(SIMPLE, InputOptions(data=str(path), batch_size=2)).requests
    assert batched[1][0].shape == (2, 16)
    assert np.frombuffer(batched[1][0].raw, "<i4").tolist() == [2] * 8 + [3] * 8 + list(range(16))


def test_json_bytes_and_inferred_dim(tmp_path: Path) -> None:
    path = tmp_path / "text.json"
    path.write_text(json.dumps({"data": [{"TEXT": ["Hello", "wörld"], "IDS": [1, 2, 3]}]}))
    ((text, ids),) = prepare_inputs(TEXT, InputOptions(data=str(path))).requests
    assert text.shape == (2,) and _decode_bytes(text.raw) == [b"Hello", "wörld".encode()]
    assert ids.shape == (3,) and np.frombuffer(ids.raw, "<i8").tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    ("document", "match"),
    [
        ("not json", "not valid JSON"),
        ({"rows": []}, "expected"),
        ({"data": []}, "expected"),
        ({"data": [[{"INPUT0": [1]}]]}, "sequence"),
        ({"data": [{"INPUT0": [1] * 16}]}, "no data for input 'INPUT1'"),
        ({"data": [{"INPUT0": [1] * 16, "INPUT1": [1] * 16, "X": [1]}]}, "unknown input 'X'"),
        ({"data": [{"INPUT0": [1] * 15, "INPUT1": [1] * 16}]}, "15 values"),
        ({"data": [{"INPUT0": ["a"] * 16, "INPUT1": [1] * 16}]}, "bad values"),
    ],
)
def test_bad_json_data(tmp_path: Path, document: object, match: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    with pytest.raises(PerfError, match=match):
        prepare_inputs(SIMPLE, InputOptions(data=str(path)))


def test_npy_directory_and_file(tmp_path: Path) -> None:
    np.save(tmp_path / "INPUT0.npy", np.arange(16, dtype=np.int32))
    np.save(tmp_path / "INPUT1.npy", np.ones(16, dtype=np.int64))
    ((a, b),) = prepare_inputs(SIMPLE, InputOptions(data=str(tmp_path), batch_size=2)).requests
    assert a.shape == (2, 16) and np.frombuffer(a.raw, "<i4").tolist() == list(range(16)) * 2
    assert np.frombuffer(b.raw, "<i4").tolist() == [1] * 32
    single = tmp_path / "dense.npy"
    np.save(single, np.full(64, 0.5, dtype=np.float32))
    ((x,),) = prepare_inputs(DENSE, InputOptions(data=str(single))).requests
    assert x.shape == (1, 64) and np.frombuffer(x.raw, "<f4").tolist() == [0.5] * 64
    (tmp_path / "INPUT1.npy").unlink()
    with pytest.raises(PerfError, match=r"missing INPUT1\.npy"):
        prepare_inputs(SIMPLE, InputOptions(data=str(tmp_path)))
    with pytest.raises(PerfError, match="no such file"):
        prepare_inputs(SIMPLE, InputOptions(data=str(tmp_path / "nope.json")))


def test_serialized_request_round_trips() -> None:
    (tensors,) = prepare_inputs(SIMPLE, InputOptions()).requests
    message = pb.ModelInferRequest.FromString(serialize_request(SIMPLE, tensors))
    assert message.model_name == "simple" and message.model_version == "1"
    assert [(t.name, t.datatype, list(t.shape)) for t in message.inputs] == [
        ("INPUT0", "INT32", [1, 16]),
        ("INPUT1", "INT32", [1, 16]),
    ]
    assert list(message.raw_input_contents) == [t.raw for t in tensors]
    assert not message.outputs


def test_encode() -> None:
    assert (
        encode("BYTES", np.array([b"hi", b""], dtype=object))
        == b"\x02\x00\x00\x00hi\x00\x00\x00\x00"
    )
    assert encode("INT16", np.array([1, -1])) == b"\x01\x00\xff\xff"
    assert encode("BOOL", np.array([True, False])) == b"\x01\x00"
