"""Read an ONNX file's input/output signature without a session (for auto-complete)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import onnx
from onnx import TensorProto

from volley.errors import ConfigError
from volley.model.signature import ModelIO, TensorInfo

#: ONNX ``TensorProto`` element type -> v2 datatype string.
ONNX_DATATYPES: Final[dict[int, str]] = {
    TensorProto.BOOL: "BOOL",
    TensorProto.UINT8: "UINT8",
    TensorProto.UINT16: "UINT16",
    TensorProto.UINT32: "UINT32",
    TensorProto.UINT64: "UINT64",
    TensorProto.INT8: "INT8",
    TensorProto.INT16: "INT16",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.FLOAT16: "FP16",
    TensorProto.FLOAT: "FP32",
    TensorProto.DOUBLE: "FP64",
    TensorProto.STRING: "BYTES",
    TensorProto.BFLOAT16: "BF16",
}


#: ONNX operators whose results are random: a model holding one is never answered from cache.
RANDOM_OPS: Final[frozenset[str]] = frozenset(
    (
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
    )
)


def has_random_ops(path: Path) -> bool:
    """True when the graph (or a subgraph) of an ONNX file holds a random-number operator."""
    model = onnx.load(str(path), load_external_data=False)
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            if node.op_type in RANDOM_OPS:
                return True
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)
    return False


def read_onnx_io(path: Path) -> ModelIO:
    """Read the input/output signature of an ONNX file without loading external weights."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ConfigError(
            f"cannot read ONNX model: {exc}",
            path=str(path),
            hint="make sure the file is a valid ONNX model (onnx.checker.check_model)",
        ) from exc
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    initializers.update(init.values.name for init in graph.sparse_initializer)
    inputs = [_tensor_info(v, path) for v in graph.input]
    if not graph.output:
        raise ConfigError(
            "ONNX model has no graph outputs",
            path=str(path),
            hint="make sure the file is an ONNX model exported with its outputs",
        )
    return ModelIO(
        inputs=tuple(t for t in inputs if t.name not in initializers),
        outputs=tuple(_tensor_info(v, path) for v in graph.output),
        overridable=tuple(t for t in inputs if t.name in initializers),
    )


def _tensor_info(value: onnx.ValueInfoProto, path: Path) -> TensorInfo:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        raise ConfigError(
            f"model tensor '{value.name}' has type '{kind}', only tensors are supported",
            path=str(path),
            hint="export the model with plain tensor inputs and outputs",
        )
    tensor_type = value.type.tensor_type
    elem = int(tensor_type.elem_type)
    shape: tuple[int, ...] | None = None
    if tensor_type.HasField("shape"):
        shape = tuple(
            int(d.dim_value) if d.WhichOneof("value") == "dim_value" and d.dim_value >= 0 else -1
            for d in tensor_type.shape.dim
        )
    onnx_type = TensorProto.DataType.Name(elem) if elem in TensorProto.DataType.values() else ""
    return TensorInfo(value.name, ONNX_DATATYPES.get(elem), shape, onnx_type or str(elem))
