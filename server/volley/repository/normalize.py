"""Triton's normalization of a model configuration, then its validation.

``fill_identity`` runs first (name, platform/backend, model file name: needed to find the
model file), ``apply_defaults`` after auto-complete (version policy, preferred batch sizes,
pinned memory, instance groups), and ``validate`` last. Every problem is a ``ConfigError``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Final

from volley._proto.inference import model_config_pb2 as mc
from volley.errors import ConfigError
from volley.model.ensemble import ENSEMBLE_PLATFORM
from volley.repository import layout

#: Supported platform -> its backend.
PLATFORM_BACKENDS: Final[dict[str, str]] = {
    "onnxruntime_onnx": "onnxruntime",
    "tensorrt_plan": "tensorrt",
}
#: Supported backend -> its platform.
BACKEND_PLATFORMS: Final[dict[str, str]] = {v: k for k, v in PLATFORM_BACKENDS.items()}

#: Instance count of a default-count ``KIND_CPU`` group of the onnxruntime backend.
DEFAULT_ORT_CPU_INSTANCES: Final[int] = 2

_Group = mc.ModelInstanceGroup
_SUPPORTED_HINT = 'use backend: "onnxruntime" (platform onnxruntime_onnx) or backend: '
_SUPPORTED_HINT += '"tensorrt" (platform tensorrt_plan)'


def fill_identity(
    config: mc.ModelConfig, *, model_name: str, versions: dict[int, Path], path: str = ""
) -> None:
    """Fill and check ``name``, ``platform``, ``backend`` and ``default_model_filename``.

    ``versions`` are the model's version directories, inspected when the configuration names
    neither platform nor backend.
    """
    if not config.name:
        config.name = model_name
    elif config.name != model_name:
        raise ConfigError(
            f"configuration name '{config.name}' does not match the model directory '{model_name}'",
            path=path,
            hint="the model name must equal its directory name: fix 'name' or remove it",
        )
    if config.platform == ENSEMBLE_PLATFORM:
        return  # no backend and no model file (see repository.ensemble)
    platform, backend = config.platform, config.backend
    if platform and platform not in PLATFORM_BACKENDS:
        raise ConfigError(
            f"unsupported backend: platform '{platform}' is not served by Volley",
            path=path,
            hint=_SUPPORTED_HINT,
        )
    if backend and backend not in BACKEND_PLATFORMS:
        raise ConfigError(
            f"unsupported backend '{backend}': Volley serves onnxruntime and tensorrt models",
            path=path,
            hint=_SUPPORTED_HINT,
        )
    if platform and backend and PLATFORM_BACKENDS[platform] != backend:
        raise ConfigError(
            f"platform '{platform}' and backend '{backend}' do not agree",
            path=path,
            hint=f"with platform '{platform}' set backend: \"{PLATFORM_BACKENDS[platform]}\" "
            "or remove one of them",
        )
    if not backend:
        backend = PLATFORM_BACKENDS[platform] if platform else ""
    if not backend:
        detected = layout.detect_backend(versions, config.default_model_filename)
        if detected is None:
            raise ConfigError(
                "cannot determine the model's backend: no platform or backend in the "
                "configuration and no model.onnx or model.plan in its version directories",
                path=path,
                hint=_SUPPORTED_HINT + ", or add <version>/model.onnx",
            )
        backend = detected
    config.backend = backend
    config.platform = BACKEND_PLATFORMS[backend]
    if not config.default_model_filename:
        config.default_model_filename = layout.DEFAULT_MODEL_FILENAMES[backend]


def apply_defaults(config: mc.ModelConfig, *, gpu_count: int = 0, path: str = "") -> None:
    """Apply Triton's defaults (spec section 12) and normalize the instance groups."""
    if not config.HasField("version_policy"):
        config.version_policy.latest.num_versions = 1
    if (
        config.HasField("dynamic_batching")
        and not config.dynamic_batching.preferred_batch_size
        and config.max_batch_size > 0
    ):
        config.dynamic_batching.preferred_batch_size.append(config.max_batch_size)
    optimization = config.optimization
    if not optimization.HasField("input_pinned_memory"):
        optimization.input_pinned_memory.enable = True
    if not optimization.HasField("output_pinned_memory"):
        optimization.output_pinned_memory.enable = True
    if config.platform != ENSEMBLE_PLATFORM:  # an ensemble runs no instances of its own
        normalize_instance_groups(config, gpu_count=gpu_count, path=path)


def normalize_instance_groups(
    config: mc.ModelConfig, *, gpu_count: int = 0, path: str = ""
) -> None:
    """Name, resolve kind, count and GPUs of every instance group (spec section 7.3)."""
    if not config.instance_group:
        config.instance_group.add().name = config.name
    for index, group in enumerate(config.instance_group):
        if not group.name:
            group.name = f"{config.name}_{index}"
        if group.kind == _Group.KIND_AUTO:
            on_gpu = gpu_count > 0 and all(0 <= g < gpu_count for g in group.gpus)
            group.kind = _Group.KIND_GPU if on_gpu else _Group.KIND_CPU
        if group.count < 0:
            raise _group_error(group, f"has negative count {group.count}", path, "set count >= 1")
        if group.count == 0:
            ort_cpu = group.kind == _Group.KIND_CPU and config.backend == "onnxruntime"
            group.count = DEFAULT_ORT_CPU_INSTANCES if ort_cpu else 1
        _check_group(config, group, gpu_count=gpu_count, path=path)


def validate(config: mc.ModelConfig, *, path: str = "") -> None:
    """Validate an effective configuration (spec sections 6-8 and 12)."""
    if not config.name:
        raise ConfigError("configuration has no 'name'", path=path, hint="set name")
    supported = config.platform in PLATFORM_BACKENDS and config.backend in BACKEND_PLATFORMS
    if not supported and config.platform != ENSEMBLE_PLATFORM:
        raise ConfigError(
            f"unsupported backend '{config.backend or config.platform}'",
            path=path,
            hint=_SUPPORTED_HINT,
        )
    if config.max_batch_size < 0:
        raise ConfigError(
            f"max_batch_size must be >= 0, got {config.max_batch_size}",
            path=path,
            hint="use 0 to disable batching or a positive maximum batch size",
        )
    _reject_unsupported(config, path)
    is_trt = config.platform == "tensorrt_plan"
    for kind, tensors in (("input", config.input), ("output", config.output)):
        _check_unique(kind, (t.name for t in tensors), path)
        for tensor in tensors:
            _validate_io(kind, tensor, config.max_batch_size, is_trt=is_trt, path=path)
    if config.HasField("dynamic_batching"):
        _validate_dynamic_batching(config, path)


def _check_group(config: mc.ModelConfig, group: _Group, *, gpu_count: int, path: str) -> None:
    if config.backend == "tensorrt" and group.kind == _Group.KIND_CPU:
        raise _group_error(
            group,
            "is KIND_CPU: TensorRT backend supports only GPU device",
            path,
            "use kind: KIND_GPU (or KIND_AUTO) on a machine with a GPU",
        )
    if group.kind == _Group.KIND_GPU:
        if gpu_count <= 0:
            raise _group_error(
                group,
                "has kind KIND_GPU but no GPUs are available",
                path,
                "use kind: KIND_CPU or KIND_AUTO, or run the server where a GPU is visible",
            )
        if not group.gpus:
            group.gpus.extend(range(gpu_count))
        bad = [g for g in group.gpus if not 0 <= g < gpu_count]
        if bad:
            raise _group_error(
                group,
                f"names GPU id(s) {bad} but only {gpu_count} GPU(s) are available",
                path,
                f"use GPU ids in 0..{gpu_count - 1} or leave 'gpus' empty for all GPUs",
            )
    elif group.gpus:
        raise _group_error(
            group,
            f"has kind {_Group.Kind.Name(group.kind)} but specifies GPUs",
            path,
            "remove 'gpus' or use kind: KIND_GPU",
        )
    if group.profile and config.platform != "tensorrt_plan":
        raise _group_error(
            group, "specifies 'profile', which only TensorRT models support", path, "remove it"
        )


def _group_error(group: _Group, what: str, path: str, hint: str) -> ConfigError:
    return ConfigError(f"instance group '{group.name}' {what}", path=path, hint=hint)


def _reject_unsupported(config: mc.ModelConfig, path: str) -> None:
    if config.HasField("ensemble_scheduling") and config.platform != ENSEMBLE_PLATFORM:
        raise ConfigError(
            f"ensemble_scheduling on a '{config.platform}' model is not supported by Volley",
            path=path,
            hint='an ensemble model has platform: "ensemble" and no backend',
        )
    if config.model_transaction_policy.decoupled:
        raise ConfigError(
            "decoupled models are not supported by Volley",
            path=path,
            hint="remove model_transaction_policy { decoupled: true }",
        )
    if config.batch_input or config.batch_output:
        raise ConfigError(
            "batch_input / batch_output (ragged batching) are not supported by Volley",
            path=path,
            hint="remove batch_input and batch_output",
        )


def _check_unique(kind: str, names: Iterable[str], path: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name and name in seen:
            raise ConfigError(
                f"duplicate {kind} name '{name}'",
                path=path,
                hint=f"give every {kind} a distinct name",
            )
        seen.add(name)


def _validate_io(
    kind: str,
    tensor: mc.ModelInput | mc.ModelOutput,
    max_batch_size: int,
    *,
    is_trt: bool,
    path: str,
) -> None:
    if not tensor.name:
        raise ConfigError(f"an {kind} has no 'name'", path=path, hint=f"set name on every {kind}")
    where = f"{kind} '{tensor.name}'"
    if tensor.data_type == mc.TYPE_INVALID:
        raise ConfigError(
            f"{where} has no data_type",
            path=path,
            hint="set data_type, e.g. TYPE_FP32, TYPE_INT64 or TYPE_STRING",
        )
    if not tensor.dims:
        raise ConfigError(
            f"{where} has no dims",
            path=path,
            hint="set dims (without the batch dimension when max_batch_size > 0); "
            "for a scalar use dims: [ 1 ] with reshape: { shape: [ ] }",
        )
    dims = [int(d) for d in tensor.dims]
    _check_dims(where, "dims", dims, path)
    if tensor.HasField("reshape"):
        shape = [int(d) for d in tensor.reshape.shape]
        if not shape and max_batch_size == 0:
            raise ConfigError(
                f"{where} has an empty reshape, which needs max_batch_size > 0",
                path=path,
                hint="scalar tensors are only supported on batching models",
            )
        _check_dims(where, "reshape", shape, path)
        _check_reshape(where, dims, shape, path)
    image_formats = (mc.ModelInput.FORMAT_NHWC, mc.ModelInput.FORMAT_NCHW)
    if isinstance(tensor, mc.ModelInput) and tensor.format in image_formats and len(dims) != 3:
        raise ConfigError(
            f"{where} has format {mc.ModelInput.Format.Name(tensor.format)}, which needs "
            f"exactly 3 dims, got {len(dims)}",
            path=path,
            hint="give 3 dims or use format: FORMAT_NONE",
        )
    if not is_trt and (tensor.is_shape_tensor or tensor.is_non_linear_format_io):
        raise ConfigError(
            f"{where} is a shape tensor or non-linear format I/O, which only TensorRT supports",
            path=path,
            hint="remove is_shape_tensor / is_non_linear_format_io",
        )


def _check_dims(where: str, field: str, dims: list[int], path: str) -> None:
    for dim in dims:
        if dim < 1 and dim != -1:
            raise ConfigError(
                f"{where} has {field} value {dim}; each must be >= 1, or -1 for a variable size",
                path=path,
                hint=f"fix {field}",
            )


def _check_reshape(where: str, dims: list[int], shape: list[int], path: str) -> None:
    if not shape:
        if -1 in dims or _product(dims) != 1:
            raise ConfigError(
                f"{where} has an empty reshape but dims {dims} do not hold exactly one element",
                path=path,
                hint="use dims: [ 1 ] with an empty reshape",
            )
        return
    if _segments(dims) != _segments(shape):
        raise ConfigError(
            f"{where} has dims {dims} and reshape {shape} with different element counts",
            path=path,
            hint="reshape must hold as many elements as dims (-1 entries pair up in order)",
        )


def _segments(dims: list[int]) -> list[int]:
    """Element counts of the fixed runs between ``-1`` entries."""
    counts, current = [], 1
    for dim in dims:
        if dim == -1:
            counts.append(current)
            current = 1
        else:
            current *= dim
    counts.append(current)
    return counts


def _product(dims: list[int]) -> int:
    result = 1
    for dim in dims:
        result *= dim
    return result


def _validate_dynamic_batching(config: mc.ModelConfig, path: str) -> None:
    db = config.dynamic_batching
    for size in db.preferred_batch_size:
        if size <= 0 or size > config.max_batch_size:
            raise ConfigError(
                f"dynamic_batching preferred_batch_size {size} is outside "
                f"[1, max_batch_size={config.max_batch_size}]",
                path=path,
                hint="each preferred size must be > 0 and <= max_batch_size",
            )
    levels = int(db.priority_levels)
    if levels > 0 and not 1 <= db.default_priority_level <= levels:
        raise ConfigError(
            f"default_priority_level {db.default_priority_level} is outside [1, {levels}]",
            path=path,
            hint="set default_priority_level between 1 and priority_levels",
        )
    bad_keys = sorted(k for k in db.priority_queue_policy if not 1 <= k <= levels)
    if bad_keys:
        raise ConfigError(
            f"priority_queue_policy level(s) {bad_keys} outside [1, {levels}]",
            path=path,
            hint="key priority_queue_policy by levels 1..priority_levels",
        )
    if db.preserve_ordering:
        if levels > 1:
            raise ConfigError(
                "preserve_ordering allows only one priority level",
                path=path,
                hint="set priority_levels <= 1 or preserve_ordering: false",
            )
        policies = [db.default_queue_policy, *db.priority_queue_policy.values()]
        if any(
            p.timeout_action == mc.ModelQueuePolicy.DELAY and p.default_timeout_microseconds
            for p in policies
        ):
            raise ConfigError(
                "a queue policy with timeout_action DELAY cannot be used with preserve_ordering",
                path=path,
                hint="use timeout_action: REJECT or preserve_ordering: false",
            )
