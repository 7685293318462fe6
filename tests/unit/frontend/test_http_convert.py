"""REST JSON <-> the service's values: what tritonclient.http sends, and malformed documents."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from volley._proto.inference import model_config_pb2 as mc
from volley.errors import InvalidArgument
from volley.frontend.http.binary import BinaryReader
from volley.frontend.http.convert import (
    config_to_json,
    index_to_json,
    json_values,
    request_from_json,
    response_to_json,
    stats_to_json,
)
from volley.serving.types import IndexEntry, InferenceResponse, OutputTensor
from volley.telemetry.stats import ModelStats


def parse(doc: Any, binary: bytes = b"") -> Any:
    return request_from_json(doc, BinaryReader(memoryview(binary)), "m", "", 7)


def tensor(**fields: Any) -> dict[str, Any]:
    return {"name": "X", "datatype": "INT32", "shape": [1, 2], **fields}


def test_binary_inputs_take_consecutive_slices_in_input_order() -> None:
    raw = np.array([[1, 2]], np.int32).tobytes() + np.array([[3, 4]], np.int32).tobytes()
    size = {"binary_data_size": 8}
    doc = {
        "id": "r1",
        "inputs": [tensor(name="A", parameters=size), tensor(name="B", parameters=size)],
        "parameters": {"binary_data_output": True, "priority": 2},
    }
    parsed = parse(doc, raw)
    a, b = parsed.request.inputs
    assert bytes(a.raw) == raw[:8] and bytes(b.raw) == raw[8:]
    assert a.parameters is None  # binary_data_size is the framing, not a tensor parameter
    assert parsed.request.id == "r1" and parsed.request.arrival_ns == 7
    assert parsed.request.parameters == {"priority": 2}
    assert parsed.binary_default is True and parsed.binary_outputs is None


def test_json_data_flat_or_nested_becomes_flat_typed_values() -> None:
    flat = parse({"inputs": [tensor(data=[1, 2])]}).request.inputs[0].values
    nested = parse({"inputs": [tensor(data=[[1, 2]])]}).request.inputs[0].values
    assert list(flat) == list(nested) == [1, 2]


@pytest.mark.parametrize(
    ("datatype", "data", "expected"),
    [
        ("BOOL", [True, False], [True, False]),
        ("FP32", [1, 2.5], [1.0, 2.5]),
        ("UINT8", [[255], [0]], [255, 0]),
        ("BYTES", ["a", ["b", ["c"]]], ["a", "b", "c"]),
        ("BYTES", [], []),
        ("INT64", [], []),
    ],
)
def test_json_values_by_datatype(datatype: str, data: Any, expected: list[Any]) -> None:
    assert list(json_values(datatype, data, "x")) == expected


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("INT32", 5, "expected an array"),
        ("INT32", [1.5], "must hold integers, got 1.5"),
        ("INT32", ["1"], "must hold integers, got '1'"),
        ("INT32", [[1, 2], [3]], "nested regularly"),
        ("INT64", [2**70], "must hold integers"),
        ("BOOL", [1, 0], "must hold booleans, got 1"),
        ("FP32", [None], "must hold numbers, got None"),
        ("FP32", [{"a": 1}], "must hold numbers"),
        ("BYTES", ["a", 1], "must hold strings, got 1"),
        ("BF16", [1.0], "binary data"),
    ],
)
def test_bad_json_data_is_invalid(datatype: str, data: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        json_values(datatype, data, "x")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "must be a JSON object"),
        ({}, "Unable to parse 'inputs'"),
        ({"inputs": {}}, "Unable to parse 'inputs'"),
        ({"inputs": [1]}, "each input must be a JSON object"),
        ({"inputs": [{"datatype": "INT32", "shape": [1]}]}, "Unable to parse 'name'"),
        ({"inputs": [tensor(datatype=3, data=[1])]}, "unable to parse 'datatype'"),
        ({"inputs": [tensor(shape="1,2", data=[1])]}, "unable to parse 'shape'"),
        ({"inputs": [tensor(shape=[1, True], data=[1])]}, "unable to parse 'shape'"),
        ({"inputs": [tensor()]}, "must set only one of the following fields.*no field is set"),
        (
            {"inputs": [tensor(data=[1, 2], parameters={"binary_data_size": 8})]},
            "set 'data' 'binary_data_size'",
        ),
        ({"inputs": [tensor(parameters={"binary_data_size": -1})]}, "binary_data_size"),
        ({"inputs": [tensor(parameters={"binary_data_size": "8"})]}, "binary_data_size"),
        ({"inputs": [tensor(parameters=[1])]}, "expected a JSON object"),
        ({"inputs": [tensor(parameters={"k": [1]}, data=[1, 2])]}, "parameter 'k' has invalid"),
        ({"inputs": [], "id": 5}, "Unable to parse 'id'"),
        ({"inputs": [], "parameters": {"binary_data_output": 1}}, "binary_data_output"),
        ({"inputs": [], "parameters": {"x": None}}, "parameter 'x' has invalid type"),
        ({"inputs": [], "outputs": {}}, "Unable to parse 'outputs'"),
        ({"inputs": [], "outputs": ["Y"]}, "each output must be a JSON object"),
        ({"inputs": [], "outputs": [{"name": 1}]}, "Unable to parse 'name' of an output"),
        (
            {"inputs": [], "outputs": [{"name": "Y", "parameters": {"binary_data": "yes"}}]},
            "'binary_data'",
        ),
    ],
)
def test_malformed_requests_are_invalid(doc: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse(doc)


def test_binary_framing_mismatches_are_invalid() -> None:
    doc = {"inputs": [tensor(parameters={"binary_data_size": 8})]}
    with pytest.raises(InvalidArgument, match="expecting 4 additional bytes"):
        parse(doc, b"\0" * 4)
    with pytest.raises(InvalidArgument, match="unexpected additional input data"):
        parse(doc, b"\0" * 12)
    with pytest.raises(InvalidArgument, match="unexpected additional input data"):
        parse({"inputs": [tensor(data=[1, 2])]}, b"\0")


def test_requested_outputs_choose_binary_or_json_each() -> None:
    doc = {
        "inputs": [],
        "outputs": [
            {"name": "A", "parameters": {"binary_data": True}},
            {"name": "B"},
            {"name": "C", "parameters": {"binary_data": False, "classification": 2}},
        ],
        "parameters": {"binary_data_output": True},
    }
    parsed = parse(doc)
    assert parsed.binary_outputs == {"A": True, "B": False, "C": False}
    assert parsed.request.outputs is not None
    assert [(o.name, o.parameters) for o in parsed.request.outputs] == [
        ("A", None),
        ("B", None),
        ("C", {"classification": 2}),
    ]


def response(*outputs: OutputTensor, request_id: str = "") -> InferenceResponse:
    return InferenceResponse("m", "1", request_id, list(outputs))


def test_response_json_and_binary_outputs_in_order() -> None:
    a = OutputTensor("A", "INT32", np.array([[1, 2]], np.int32))
    b = OutputTensor("B", "BYTES", np.array([b"hi", b""], dtype=object))
    c = OutputTensor("C", "FP32", np.zeros((0, 2), np.float32))
    header, blobs = response_to_json(response(a, b, c, request_id="7"), True, None)
    doc = json.loads(header)
    assert list(doc) == ["id", "model_name", "model_version", "outputs"]
    assert [o["parameters"]["binary_data_size"] for o in doc["outputs"]] == [8, 10, 0]
    assert blobs == [a.array.tobytes(), b"\x02\0\0\0hi\0\0\0\0"]  # empty outputs add no blob
    header, blobs = response_to_json(response(a, b), False, {"A": False, "B": False})
    doc = json.loads(header)
    assert "id" not in doc and blobs == []
    assert doc["outputs"][0] == {"name": "A", "datatype": "INT32", "shape": [1, 2], "data": [1, 2]}
    assert doc["outputs"][1]["data"] == ["hi", ""]


def test_json_outputs_that_json_cannot_carry_are_refused() -> None:
    raw = OutputTensor("R", "BYTES", np.array([b"\xff"], dtype=object))
    with pytest.raises(InvalidArgument, match="not UTF-8"):
        response_to_json(response(raw), False, None)
    bf16 = OutputTensor("H", "BF16", np.zeros(2, np.uint16))
    with pytest.raises(InvalidArgument, match="BF16"):
        response_to_json(response(bf16), False, None)
    _, blobs = response_to_json(response(bf16), True, None)
    assert blobs == [b"\0" * 4]


def test_statistics_have_tritons_keys() -> None:
    stats = ModelStats("m", 3)
    stats.record_request(2, 10, 1, 2, 3)
    stats.record_execution(2, 1, 2, 3)
    stats.record_success(50)
    stats.memory_bytes[("CPU", 0)] = 1024
    doc = stats_to_json(stats)
    assert doc["version"] == "3" and doc["inference_count"] == 2 and doc["execution_count"] == 1
    assert doc["inference_stats"]["success"] == {"count": 1, "ns": 50}
    assert doc["inference_stats"]["queue"] == {"count": 1, "ns": 10}
    assert set(doc["inference_stats"]) == {
        "success", "fail", "queue", "compute_input", "compute_infer", "compute_output",
        "cache_hit", "cache_miss",
    }  # fmt: skip
    assert doc["batch_stats"] == [
        {
            "batch_size": 2,
            "compute_input": {"count": 1, "ns": 1},
            "compute_infer": {"count": 1, "ns": 2},
            "compute_output": {"count": 1, "ns": 3},
        }
    ]
    assert doc["memory_usage"] == [{"type": "CPU", "id": 0, "byte_size": 1024}]


def test_index_rows_print_only_what_they_know() -> None:
    rows = [IndexEntry("a"), IndexEntry("b", "1", "READY"), IndexEntry("c", "", "UNAVAILABLE", "x")]
    assert index_to_json(rows) == [
        {"name": "a"},
        {"name": "b", "version": "1", "state": "READY"},
        {"name": "c", "state": "UNAVAILABLE", "reason": "x"},
    ]


def test_config_json_prints_defaults_and_64_bit_numbers() -> None:
    config = mc.ModelConfig(name="m", max_batch_size=0)
    config.input.add(name="X", data_type=mc.TYPE_FP32, dims=[-1, 4])
    config.dynamic_batching.max_queue_delay_microseconds = 100
    doc = config_to_json(config)
    assert doc["max_batch_size"] == 0
    assert doc["input"][0]["dims"] == [-1, 4]
    assert doc["dynamic_batching"]["max_queue_delay_microseconds"] == 100
