"""Rebuild the example models of this repository: ``python model_repository/build_models.py``.

* ``dense_classifier``: FP32 [batch, 64] -> 128 -> 10 logits and softmax probabilities.
* ``simple``: two INT32 [batch, 16] inputs -> their sum and difference (config auto-completed).
* ``text_features``: a BYTES text tensor and an INT64 id tensor -> lower-cased text, the ids
  doubled and their sum (no batching).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
OPSET = [helper.make_opsetid("", 17)]


def _save(graph: onnx.GraphProto, model_dir: str) -> None:
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="volley")
    model.ir_version = 8
    onnx.checker.check_model(model)
    out = HERE / model_dir / "1" / "model.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))


def dense_classifier() -> None:
    rng = np.random.default_rng(7)
    w1 = (rng.standard_normal((64, 128)) / 8).astype(np.float32)
    b1 = (rng.standard_normal(128) / 8).astype(np.float32)
    w2 = (rng.standard_normal((128, 10)) / 11).astype(np.float32)
    b2 = (rng.standard_normal(10) / 11).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["INPUT", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], ["LOGITS"]),
        helper.make_node("Softmax", ["LOGITS"], ["PROBS"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "dense_classifier",
        [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["batch", 64])],
        [
            helper.make_tensor_value_info("LOGITS", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("PROBS", TensorProto.FLOAT, ["batch", 10]),
        ],
        initializer=[
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(b2, "b2"),
        ],
    )
    _save(graph, "dense_classifier")


def simple() -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        "simple",
        [
            helper.make_tensor_value_info("INPUT0", TensorProto.INT32, ["batch", 16]),
            helper.make_tensor_value_info("INPUT1", TensorProto.INT32, ["batch", 16]),
        ],
        [
            helper.make_tensor_value_info("OUTPUT0", TensorProto.INT32, ["batch", 16]),
            helper.make_tensor_value_info("OUTPUT1", TensorProto.INT32, ["batch", 16]),
        ],
    )
    _save(graph, "simple")


def text_features() -> None:
    two = numpy_helper.from_array(np.array(2, dtype=np.int64), "two")
    graph = helper.make_graph(
        [
            helper.make_node(
                "StringNormalizer",
                ["TEXT"],
                ["TEXT_LOWER"],
                case_change_action="LOWER",
                locale="C",
            ),
            helper.make_node("Mul", ["IDS", "two"], ["IDS_DOUBLED"]),
            helper.make_node("ReduceSum", ["IDS"], ["IDS_SUM"], keepdims=1),
        ],
        "text_features",
        [
            helper.make_tensor_value_info("TEXT", TensorProto.STRING, ["n"]),
            helper.make_tensor_value_info("IDS", TensorProto.INT64, ["k"]),
        ],
        [
            helper.make_tensor_value_info("TEXT_LOWER", TensorProto.STRING, ["n"]),
            helper.make_tensor_value_info("IDS_DOUBLED", TensorProto.INT64, ["k"]),
            helper.make_tensor_value_info("IDS_SUM", TensorProto.INT64, [1]),
        ],
        initializer=[two],
    )
    _save(graph, "text_features")


if __name__ == "__main__":
    dense_classifier()
    simple()
    text_features()
    print(f"models written under {HERE}")
