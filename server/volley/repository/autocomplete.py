"""Triton's backend auto-complete: fill inputs, outputs and batching from the model file.

The model file's signature comes from its backend (``read_signature``), so this module never
opens a model itself. A configuration that already lists inputs *and* outputs is not
auto-completed, only cross-checked against the model, as Triton's ORT backend does. Backends
that cannot read a signature (TensorRT where its package is not installed) need inputs and
outputs configured.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from volley._proto.inference import model_config_pb2 as mc
from volley.errors import ConfigError
from volley.model import dtypes
from volley.model.signature import ModelIO, TensorInfo

#: ``(backend name, model file) -> signature``, or None when the backend cannot read one.
SignatureReader = Callable[[str, Path], "ModelIO | None"]


def autocomplete(
    config: mc.ModelConfig,
    model_file: Path,
    read_signature: SignatureReader,
    *,
    default_max_batch_size: int = 4,
    fill: bool = True,
    config_path: str = "",
) -> None:
    """Complete ``config`` in place from ``model_file`` and cross-check it against the model.

    ``config.backend`` must already be set. With ``fill`` False nothing is added, the
    configuration is only checked. Errors about the configuration name ``config_path``.
    """
    io = read_signature(config.backend, model_file)
    if io is None:
        _complete_unsigned(config, fill=fill, config_path=config_path)
        return
    if config.HasField("sequence_batching"):
        io = _without_sequence_tensors(config, io, config_path)
    if fill and not (config.input and config.output):
        complete_from_io(
            config, io, default_max_batch_size=default_max_batch_size, config_path=config_path
        )
    check_against_io(config, io, config_path=config_path)


def _without_sequence_tensors(config: mc.ModelConfig, io: ModelIO, config_path: str) -> ModelIO:
    """The signature less the inputs the sequence batcher fills (control and state inputs) and
    the state outputs it keeps; each of those must exist in the model."""
    sb = config.sequence_batching
    server_inputs = {c.name for c in sb.control_input} | {s.input_name for s in sb.state}
    state_outputs = {s.output_name for s in sb.state}
    names_in = {t.name for t in io.inputs}
    names_out = {t.name for t in io.outputs}
    for name in sorted(server_inputs - names_in):
        raise ConfigError(
            f"sequence_batching names input '{name}', which the model does not have; model "
            f"inputs: {sorted(names_in)}",
            path=config_path,
        )
    for name in sorted(state_outputs - names_out):
        raise ConfigError(
            f"sequence_batching state output '{name}' is not a model output; model outputs: "
            f"{sorted(names_out)}",
            path=config_path,
        )
    return ModelIO(
        tuple(t for t in io.inputs if t.name not in server_inputs),
        tuple(t for t in io.outputs if t.name not in state_outputs),
        io.overridable,
        io.max_batch_size,
    )


def complete_from_io(
    config: mc.ModelConfig, io: ModelIO, *, default_max_batch_size: int = 4, config_path: str = ""
) -> None:
    """Fill ``max_batch_size``, missing inputs/outputs and ``dynamic_batching`` from ``io``."""
    if io.can_batch():
        if config.max_batch_size == 0:
            limit = io.max_batch_size
            config.max_batch_size = max(default_max_batch_size if limit is None else limit, 0)
        if config.max_batch_size > 1 and config.WhichOneof("scheduling_choice") is None:
            config.dynamic_batching.SetInParent()
    elif config.max_batch_size != 0:
        raise ConfigError(
            f"max_batch_size is {config.max_batch_size} but the model does not support "
            f"batching: {_why_not_batchable(io)}",
            path=config_path,
            hint="set max_batch_size: 0 (dims are then the full shape), or export the model "
            "with a dynamic first dimension on every input and output",
        )
    batched = config.max_batch_size > 0
    if not config.input:
        for info in io.inputs:
            _fill_tensor(config.input.add(), info, batched=batched, config_path=config_path)
    if not config.output:
        for out in io.outputs:
            _fill_tensor(config.output.add(), out, batched=batched, config_path=config_path)


def check_against_io(config: mc.ModelConfig, io: ModelIO, *, config_path: str = "") -> None:
    """Check the configured inputs/outputs against the model's: names, datatypes, dims."""
    batched = config.max_batch_size > 0
    if io.max_batch_size is not None and config.max_batch_size > io.max_batch_size:
        raise ConfigError(
            f"max_batch_size is {config.max_batch_size} but the model accepts batches of at "
            f"most {io.max_batch_size} (the largest first dimension of its optimisation profiles)",
            path=config_path,
            hint=f"set max_batch_size: {io.max_batch_size} or less, or rebuild the engine with "
            "a larger maximum batch in its optimisation profile",
        )
    model_inputs = {t.name: t for t in io.inputs}
    allowed_inputs = {**{t.name: t for t in io.overridable}, **model_inputs}
    configured: set[str] = set()
    for tensor in config.input:
        info = allowed_inputs.get(tensor.name)
        if info is None:
            raise _unknown("input", tensor.name, allowed_inputs, config_path)
        if tensor.optional and tensor.name in model_inputs:
            raise ConfigError(
                f"input '{tensor.name}' is marked optional but the model requires it",
                path=config_path,
                hint="only inputs that have an initializer in the ONNX graph can be optional",
            )
        if tensor.optional and batched:
            raise ConfigError(
                f"optional input '{tensor.name}' is not supported for a model with "
                "max_batch_size > 0",
                path=config_path,
                hint="remove 'optional: true' or set max_batch_size: 0",
            )
        _check_tensor("input", tensor, info, batched=batched, config_path=config_path)
        configured.add(tensor.name)
    missing = [name for name in model_inputs if name not in configured]
    if missing:
        raise ConfigError(
            f"configuration lacks model input(s) {', '.join(repr(n) for n in missing)}; "
            f"configuration has {len(config.input)} input(s), model requires {len(model_inputs)}",
            path=config_path,
            hint="list every model input in 'input', or remove 'input' and 'output' to "
            "let auto-complete fill them",
        )
    model_outputs = {t.name: t for t in io.outputs}
    for output in config.output:
        info = model_outputs.get(output.name)
        if info is None:
            raise _unknown("output", output.name, model_outputs, config_path)
        _check_tensor("output", output, info, batched=batched, config_path=config_path)


def _complete_unsigned(config: mc.ModelConfig, *, fill: bool, config_path: str) -> None:
    if not config.input or not config.output:
        raise ConfigError(
            "a TensorRT model needs its inputs and outputs in the configuration",
            path=config_path,
            hint="the tensorrt package is not installed here, so the engine cannot be read: "
            "install volley-server[tensorrt], or list every input and "
            "output with name, data_type and dims (and max_batch_size) in config.pbtxt",
        )
    if fill and config.max_batch_size > 1 and config.WhichOneof("scheduling_choice") is None:
        config.dynamic_batching.SetInParent()


def _fill_tensor(
    tensor: mc.ModelInput | mc.ModelOutput, info: TensorInfo, *, batched: bool, config_path: str
) -> None:
    if info.datatype is None:
        raise ConfigError(
            f"model tensor '{info.name}' has element type {info.native_type}, which the "
            "protocol cannot carry",
            path=config_path,
            hint="cast the tensor in the model to a supported type (FP32, INT64, ...)",
        )
    if info.shape is None:
        raise ConfigError(
            f"model tensor '{info.name}' has no shape information, auto-complete cannot "
            "derive its dims",
            path=config_path,
            hint="declare the model's inputs and outputs in the configuration",
        )
    tensor.name = info.name
    tensor.data_type = mc.DataType.ValueType(dtypes.TO_CONFIG[info.datatype])
    dims = info.shape[1:] if batched else info.shape
    if dims:
        tensor.dims.extend(dims)
    else:
        tensor.dims.append(1)
        if batched:
            tensor.reshape.SetInParent()


def _check_tensor(
    kind: str,
    tensor: mc.ModelInput | mc.ModelOutput,
    info: TensorInfo,
    *,
    batched: bool,
    config_path: str,
) -> None:
    configured = dtypes.FROM_CONFIG.get(tensor.data_type)
    if configured is not None and configured != info.datatype:
        model_type = (
            mc.DataType.Name(mc.DataType.ValueType(dtypes.TO_CONFIG[info.datatype]))
            if info.datatype is not None
            else info.native_type
        )
        raise ConfigError(
            f"configuration expects datatype {mc.DataType.Name(tensor.data_type)} for {kind} "
            f"'{tensor.name}', model provides {model_type}",
            path=config_path,
            hint=f"set data_type: {model_type} for {kind} '{tensor.name}'",
        )
    if info.shape is None:
        return
    dims = (
        [int(d) for d in tensor.reshape.shape]
        if tensor.HasField("reshape")
        else [int(d) for d in tensor.dims]
    )
    if not info.shape:
        if any(d != 1 for d in dims):
            raise ConfigError(
                f"{kind} '{tensor.name}' is a scalar in the model, its dims must be [ 1 ]",
                path=config_path,
                hint="set dims: [ 1 ] for a scalar model tensor",
            )
        return
    if batched and info.shape[0] != -1:
        raise ConfigError(
            f"max_batch_size > 0 but {kind} '{tensor.name}' has a fixed first dimension "
            f"{_shape(info.shape)} in the model, so the model cannot batch",
            path=config_path,
            hint="set max_batch_size: 0 and give the full shape in dims",
        )
    full = ([-1] if batched else []) + dims
    matches = len(full) == len(info.shape) and all(
        m == -1 or m == c for m, c in zip(info.shape, full, strict=True)
    )
    if not matches:
        batch_note = " (batch dimension first, as max_batch_size > 0)" if batched else ""
        raise ConfigError(
            f"{kind} '{tensor.name}': the model expects shape {_shape(info.shape)} but the "
            f"configuration specifies {_shape(full)}{batch_note}",
            path=config_path,
            hint="make dims match the model (without the batch dimension when "
            "max_batch_size > 0); -1 marks a variable dimension",
        )


def _unknown(kind: str, name: str, allowed: dict[str, Any], config_path: str) -> ConfigError:
    names = ", ".join(sorted(allowed)) or "none"
    return ConfigError(
        f"configuration {kind} '{name}' is not among the model's {kind}s ({names})",
        path=config_path,
        hint=f"use the ONNX graph's {kind} names exactly",
    )


def _why_not_batchable(io: ModelIO) -> str:
    for info in (*io.inputs, *io.outputs):
        if info.shape is None:
            return f"tensor '{info.name}' has unknown rank"
        if not info.shape:
            return f"tensor '{info.name}' is a scalar"
        if info.shape[0] != -1:
            return f"tensor '{info.name}' has fixed first dimension {info.shape[0]}"
    return "no dynamic first dimension"


def _shape(shape: tuple[int, ...] | list[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
