"""Tiny ONNX models built at test time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


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
