"""Tiny ONNX models and model directories built at test time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8

Shape = Sequence[int | str] | None


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )


def identity(
    in_shape: Shape = ("N", 4),
    out_shape: Shape = ("N", 4),
    *,
    elem: int = TensorProto.FLOAT,
    in_name: str = "x",
    out_name: str = "y",
) -> onnx.ModelProto:
    """``y = Identity(x)``; string dims are symbolic (dynamic)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", [in_name], [out_name])],
        "identity",
        [helper.make_tensor_value_info(in_name, elem, in_shape)],
        [helper.make_tensor_value_info(out_name, elem, out_shape)],
    )
    return _model(graph)


def add_two(shape: Shape = ("N", 3), *, elem: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """``sum = a + b`` and ``diff = a - b``: two inputs, two outputs."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Sub", ["a", "b"], ["diff"]),
        ],
        "add_two",
        [helper.make_tensor_value_info(n, elem, shape) for n in ("a", "b")],
        [helper.make_tensor_value_info(n, elem, shape) for n in ("sum", "diff")],
    )
    return _model(graph)


def with_default_input(shape: Shape = (2,)) -> onnx.ModelProto:
    """``y = x + bias`` where ``bias`` is a graph input with an initializer (overridable)."""
    bias = numpy_helper.from_array(np.ones(2, dtype=np.float32), name="bias")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "bias"], ["y"])],
        "with_default_input",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, shape),
            helper.make_tensor_value_info("bias", TensorProto.FLOAT, (2,)),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        initializer=[bias],
    )
    return _model(graph)


def unknown_op() -> onnx.ModelProto:
    """A well-formed ONNX file that ONNX Runtime cannot load (no such operator)."""
    graph = helper.make_graph(
        [helper.make_node("NoSuchOperator", ["x"], ["y"], domain="volley.test")],
        "unknown_op",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ("N", 2))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ("N", 2))],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("volley.test", 1)],
        ir_version=IR_VERSION,
    )
    return model


def make_model_dir(
    repo: Path,
    name: str,
    model: onnx.ModelProto | bytes | None = None,
    *,
    config: str | None = None,
    config_name: str = "config.pbtxt",
    versions: Sequence[int | str] = (1,),
    filename: str = "model.onnx",
) -> Path:
    """Create ``repo/name`` with a config file and ``<version>/<filename>`` per version."""
    model_dir = repo / name
    model_dir.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (model_dir / config_name).write_text(config)
    for version in versions:
        version_dir = model_dir / str(version)
        version_dir.mkdir(exist_ok=True)
        if model is None:
            continue
        target = version_dir / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(model, bytes):
            target.write_bytes(model)
        else:
            onnx.save(model, str(target))
    return model_dir


def write_matmul_chain(model_dir: Path, weight: np.ndarray, layers: int, rows: int | str) -> None:
    """``Y = X @ W @ W ...`` (``layers`` times) as ``model_dir/1/model.onnx``.

    ``rows`` is the first dimension of X and Y: a number, or a name for a dynamic batch.
    """
    width = weight.shape[0]
    nodes, prev = [], "X"
    for i in range(layers):
        out = "Y" if i == layers - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, "W"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "matmul_chain",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [rows, width])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [rows, width])],
        initializer=[numpy_helper.from_array(weight.astype(np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (model_dir / "1").mkdir(parents=True)
    onnx.save(model, str(model_dir / "1" / "model.onnx"))


def add_constant(value: float, width: int = 4, *, padding_bytes: int = 0) -> onnx.ModelProto:
    """``Y = X + value`` over ``[N, width]`` FP32: a model whose output reveals which it is.

    ``padding_bytes`` adds an unused initializer of that size, to give the model a footprint.
    """
    inits = [numpy_helper.from_array(np.full(width, value, np.float32), "c")]
    nodes = [helper.make_node("Add", ["X", "c"], ["Y"])]
    if padding_bytes:
        # zeros that a Gather reads, so the runtime must keep (and hold) the whole tensor
        inits.append(numpy_helper.from_array(np.zeros(padding_bytes // 4, np.float32), "padding"))
        inits.append(numpy_helper.from_array(np.zeros(width, np.int64), "idx"))
        nodes = [
            helper.make_node("Gather", ["padding", "idx"], ["zero"]),
            helper.make_node("Add", ["c", "zero"], ["c2"]),
            helper.make_node("Add", ["X", "c2"], ["Y"]),
        ]
    graph = helper.make_graph(
        nodes,
        "add_constant",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", width])],
        initializer=inits,
    )
    return _model(graph)
