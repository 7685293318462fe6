"""A stateful accumulator for sequence batching tests: the server keeps its state."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from onnx_models import make_model_dir


def accumulator(corrid_type: int = TensorProto.UINT64) -> onnx.ModelProto:
    """``OUTPUT = READY ? INPUT + (START ? 0 : ACC_IN) : ACC_IN``; ``ACC_OUT = OUTPUT``;
    ``CORR_OUT = CORRID`` (INT32 tensors of shape [N, 1])."""
    one = helper.make_tensor("one", TensorProto.INT32, [1], [1])
    nodes = [
        helper.make_node("Sub", ["one", "START"], ["not_start"]),
        helper.make_node("Mul", ["not_start", "ACC_IN"], ["carried"]),
        helper.make_node("Add", ["INPUT", "carried"], ["summed"]),
        helper.make_node("Mul", ["READY", "summed"], ["fresh"]),
        helper.make_node("Sub", ["one", "READY"], ["not_ready"]),
        helper.make_node("Mul", ["not_ready", "ACC_IN"], ["kept"]),
        helper.make_node("Add", ["fresh", "kept"], ["OUTPUT"]),
        helper.make_node("Identity", ["OUTPUT"], ["ACC_OUT"]),
        helper.make_node("Identity", ["CORRID"], ["CORR_OUT"]),
    ]
    ints = [
        helper.make_tensor_value_info(n, TensorProto.INT32, ["N", 1])
        for n in ("INPUT", "START", "READY", "ACC_IN")
    ]
    graph = helper.make_graph(
        nodes,
        "accumulator",
        [*ints, helper.make_tensor_value_info("CORRID", corrid_type, ["N", 1])],
        [
            helper.make_tensor_value_info("OUTPUT", TensorProto.INT32, ["N", 1]),
            helper.make_tensor_value_info("ACC_OUT", TensorProto.INT32, ["N", 1]),
            helper.make_tensor_value_info("CORR_OUT", corrid_type, ["N", 1]),
        ],
        initializer=[one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def accumulator_config(
    strategy: str = "direct { }",
    max_batch_size: int = 4,
    idle_us: int = 5_000_000,
    corrid: str = "TYPE_UINT64",
    instances: int = 1,
) -> str:
    """A ``config.pbtxt`` for ``accumulator`` with the server filling controls and state."""
    corr_out = {"TYPE_UINT64": "TYPE_UINT64", "TYPE_STRING": "TYPE_STRING"}[corrid]
    return f"""backend: "onnxruntime"
max_batch_size: {max_batch_size}
input [ {{ name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [
  {{ name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "CORR_OUT" data_type: {corr_out} dims: [ 1 ] }}
]
instance_group [ {{ count: {instances} kind: KIND_CPU }} ]
sequence_batching {{
  max_sequence_idle_microseconds: {idle_us}
  {strategy}
  control_input [
    {{ name: "START" control [ {{ kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "READY" control [ {{ kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "CORRID" control [ {{ kind: CONTROL_SEQUENCE_CORRID data_type: {corrid} }} ] }}
  ]
  state [ {{
    input_name: "ACC_IN" output_name: "ACC_OUT" data_type: TYPE_INT32 dims: [ 1 ]
    initial_state: {{ data_type: TYPE_INT32 dims: [ 1 ] zero_data: true name: "zeros" }}
  }} ]
}}
"""


def write_accumulator(repo: Path, name: str = "acc", **config: object) -> Path:
    """``repo/name`` serving ``accumulator`` with ``accumulator_config(**config)``."""
    corrid = str(config.get("corrid", "TYPE_UINT64"))
    elem = TensorProto.STRING if corrid == "TYPE_STRING" else TensorProto.UINT64
    return make_model_dir(
        repo,
        name,
        accumulator(elem),
        config=accumulator_config(**config),  # type: ignore[arg-type]
    )
