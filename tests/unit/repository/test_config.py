"""Configuration files (pbtxt / yaml / json), normalization and validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from volley._proto.inference import model_config_pb2 as mc
from volley.errors import ConfigError
from volley.repository import config_io, normalize

SPEC_EXAMPLE = """
name: "resnet50_onnx"
backend: "onnxruntime"
max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 3, 224, 224 ] } ]
output [ { name: "probs" data_type: TYPE_FP32 dims: [ 1000 ] label_filename: "labels.txt" } ]
instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0 ] } ]
dynamic_batching {
  max_queue_delay_microseconds: 100
  default_queue_policy { timeout_action: REJECT default_timeout_microseconds: 5000
                         allow_timeout_override: true max_queue_size: 64 }
}
optimization { execution_accelerators { gpu_execution_accelerator: [
  { name: "tensorrt" parameters { key: "precision_mode" value: "FP16" } } ] } }
parameters { key: "intra_op_thread_count" value: { string_value: "4" } }
version_policy: { latest { num_versions: 1 } }
"""

SPEC_EXAMPLE_YAML = """
name: resnet50_onnx
backend: onnxruntime
max_batch_size: 8
input:
  - {name: input, data_type: TYPE_FP32, format: FORMAT_NCHW, dims: [3, 224, "224"]}
output:
  - {name: probs, data_type: TYPE_FP32, dims: ["1000"], label_filename: labels.txt}
instance_group: [{count: 2, kind: KIND_GPU, gpus: [0]}]
dynamic_batching:
  max_queue_delay_microseconds: "100"
  default_queue_policy:
    timeout_action: REJECT
    default_timeout_microseconds: 5000
    allow_timeout_override: true
    max_queue_size: 64
optimization:
  execution_accelerators:
    gpu_execution_accelerator:
      - name: tensorrt
        parameters: {precision_mode: FP16}
parameters:
  intra_op_thread_count: {string_value: "4"}
version_policy: {latest: {num_versions: 1}}
"""


def test_spec_example_parses_with_every_field() -> None:
    config = config_io.parse_pbtxt(SPEC_EXAMPLE)
    assert config.name == "resnet50_onnx"
    assert config.max_batch_size == 8
    (inp,) = config.input
    assert (inp.name, inp.data_type, inp.format) == ("input", mc.TYPE_FP32, inp.FORMAT_NCHW)
    assert list(inp.dims) == [3, 224, 224]
    assert config.output[0].label_filename == "labels.txt"
    group = config.instance_group[0]
    assert (group.count, group.kind, list(group.gpus)) == (2, group.KIND_GPU, [0])
    policy = config.dynamic_batching.default_queue_policy
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert (policy.default_timeout_microseconds, policy.max_queue_size) == (5000, 64)
    assert policy.allow_timeout_override
    accel = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accel.name == "tensorrt"
    assert dict(accel.parameters) == {"precision_mode": "FP16"}
    assert config.parameters["intra_op_thread_count"].string_value == "4"
    assert config.version_policy.latest.num_versions == 1


def test_yaml_with_int64_as_strings_equals_pbtxt() -> None:
    assert config_io.parse_yaml(SPEC_EXAMPLE_YAML) == config_io.parse_pbtxt(SPEC_EXAMPLE)


def test_json_equals_pbtxt() -> None:
    pbtxt = config_io.parse_pbtxt(SPEC_EXAMPLE)
    text = json.dumps(config_io.to_json(pbtxt))
    assert config_io.parse_json(text) == pbtxt


def test_triton_list_syntax_and_repeated_fields_are_equivalent() -> None:
    listed = config_io.parse_pbtxt(
        """
        # a comment
        input [ { name: "a" data_type: TYPE_INT64 dims: [ -1, 3 ] },
                { name: "b", data_type: TYPE_BOOL, dims: [ 1 ] } ]
        version_policy: { specific: { versions: [ 1, 3 ] } }
        """
    )
    repeated = config_io.parse_pbtxt(
        """
        input { name: "a" data_type: TYPE_INT64 dims: -1 dims: 3 }  # trailing comment
        input: { name: 'b'; data_type: 1; dims: 1 }
        version_policy { specific { versions: 1 versions: 3 } }
        """
    )
    assert listed == repeated
    assert list(listed.input[0].dims) == [-1, 3]
    assert list(listed.version_policy.specific.versions) == [1, 3]


def test_yaml_map_with_integer_keys() -> None:
    config = config_io.parse_yaml(
        "dynamic_batching:\n  priority_levels: 2\n  priority_queue_policy:\n"
        "    2: {max_queue_size: 5}\n"
    )
    assert config.dynamic_batching.priority_queue_policy[2].max_queue_size == 5


def test_to_json_renders_int64_as_numbers() -> None:
    config = config_io.parse_pbtxt(SPEC_EXAMPLE)
    data = config_io.to_json(config)
    assert data["input"][0]["dims"] == [3, 224, 224]
    assert data["dynamic_batching"]["max_queue_delay_microseconds"] == 100
    assert data["dynamic_batching"]["default_queue_policy"]["default_timeout_microseconds"] == 5000


@pytest.mark.parametrize("name", ["config.pbtxt", "config.yaml", "config.json"])
def test_write_then_read_round_trips(tmp_path: Path, name: str) -> None:
    config = config_io.parse_pbtxt(SPEC_EXAMPLE)
    config_io.write_config(config, tmp_path / name)
    loaded, path = config_io.read_config(tmp_path)
    assert path == tmp_path / name
    assert loaded == config


def test_no_config_file_is_an_empty_config(tmp_path: Path) -> None:
    config, path = config_io.read_config(tmp_path)
    assert path is None
    assert config == mc.ModelConfig()


def test_two_config_files_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "config.pbtxt").write_text('name: "m"')
    (tmp_path / "config.json").write_text('{"name": "m"}')
    with pytest.raises(ConfigError, match="several configuration files") as info:
        config_io.read_config(tmp_path)
    assert info.value.hint


def test_pbtxt_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text('name: "m"\nmax_batch_sizee: 4\n')
    with pytest.raises(ConfigError) as info:
        config_io.read_config(tmp_path)
    err = info.value
    assert err.path == str(path)
    assert "line 2" in err.message
    assert "max_batch_sizee" in err.message
    assert err.hint


def test_pbtxt_two_members_of_a_oneof_is_an_error() -> None:
    with pytest.raises(ConfigError):
        config_io.parse_pbtxt("version_policy { all { } latest { num_versions: 1 } }")


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("name: m\ninput: [ {name: x\n")
    with pytest.raises(ConfigError) as info:
        config_io.read_config(tmp_path)
    assert info.value.path == str(path)
    assert "line" in info.value.message


def test_json_unknown_field_and_bad_syntax(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"maxBatchSizee": 3}')
    with pytest.raises(ConfigError, match="maxBatchSizee") as info:
        config_io.read_config(tmp_path)
    assert info.value.path == str(path)
    path.write_text('{"name": "m",}')
    with pytest.raises(ConfigError, match="line 1"):
        config_io.read_config(tmp_path)


def test_yaml_that_is_not_a_mapping_is_an_error() -> None:
    with pytest.raises(ConfigError, match="mapping"):
        config_io.parse_yaml("- 1\n- 2\n")


# --- normalization -----------------------------------------------------------------------


def _identity(config: mc.ModelConfig, name: str = "m") -> mc.ModelConfig:
    normalize.fill_identity(config, model_name=name, versions={})
    return config


def test_name_is_filled_from_directory_and_must_match() -> None:
    assert _identity(mc.ModelConfig(backend="onnxruntime")).name == "m"
    with pytest.raises(ConfigError, match="does not match"):
        _identity(mc.ModelConfig(name="other", backend="onnxruntime"))


@pytest.mark.parametrize(
    ("platform", "backend", "filename"),
    [
        ("onnxruntime_onnx", "", "model.onnx"),
        ("", "onnxruntime", "model.onnx"),
        ("tensorrt_plan", "", "model.plan"),
        ("", "tensorrt", "model.plan"),
        ("tensorrt_plan", "tensorrt", "model.plan"),
    ],
)
def test_platform_and_backend_fill_each_other(platform: str, backend: str, filename: str) -> None:
    config = _identity(mc.ModelConfig(platform=platform, backend=backend))
    assert (config.platform, config.backend) in {
        ("onnxruntime_onnx", "onnxruntime"),
        ("tensorrt_plan", "tensorrt"),
    }
    assert config.default_model_filename == filename


def test_backend_detected_from_version_directory(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.plan").write_bytes(b"engine")
    config = mc.ModelConfig()
    normalize.fill_identity(config, model_name="m", versions={1: tmp_path / "1"})
    assert (config.platform, config.backend) == ("tensorrt_plan", "tensorrt")


@pytest.mark.parametrize(
    ("platform", "backend"),
    [("pytorch_libtorch", ""), ("", "python"), ("", "openvino")],
)
def test_unsupported_backend(platform: str, backend: str) -> None:
    with pytest.raises(ConfigError, match="unsupported backend") as info:
        _identity(mc.ModelConfig(platform=platform, backend=backend))
    assert "onnxruntime" in info.value.hint


def test_platform_backend_disagreement() -> None:
    with pytest.raises(ConfigError, match="do not agree"):
        _identity(mc.ModelConfig(platform="onnxruntime_onnx", backend="tensorrt"))


def test_no_backend_and_nothing_to_detect() -> None:
    with pytest.raises(ConfigError, match="cannot determine"):
        _identity(mc.ModelConfig())


def _defaults(text: str, *, gpu_count: int = 0, backend: str = "onnxruntime") -> mc.ModelConfig:
    config = config_io.parse_pbtxt(text)
    config.backend = backend
    _identity(config)
    normalize.apply_defaults(config, gpu_count=gpu_count)
    return config


def test_defaults_are_visible() -> None:
    config = _defaults("max_batch_size: 8 dynamic_batching { }")
    assert config.version_policy.latest.num_versions == 1
    assert list(config.dynamic_batching.preferred_batch_size) == [8]
    assert config.optimization.input_pinned_memory.enable
    assert config.optimization.output_pinned_memory.enable
    (group,) = config.instance_group
    assert (group.name, group.kind, group.count) == ("m", group.KIND_CPU, 2)


def test_explicit_values_are_kept() -> None:
    config = _defaults(
        "max_batch_size: 8 dynamic_batching { preferred_batch_size: [2, 4] }"
        " version_policy { all { } } optimization { input_pinned_memory { enable: false } }"
    )
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4]
    assert config.version_policy.HasField("all")
    assert not config.optimization.input_pinned_memory.enable


def test_instance_group_on_gpu_machine() -> None:
    config = _defaults("", gpu_count=2)
    (group,) = config.instance_group
    assert (group.kind, group.count, list(group.gpus)) == (group.KIND_GPU, 1, [0, 1])


def test_instance_group_names_and_counts() -> None:
    config = _defaults(
        "instance_group [ { kind: KIND_CPU count: 3 }, { name: 'mine' kind: KIND_GPU gpus: [1] }"
        ", { } ]",
        gpu_count=2,
    )
    first, second, third = config.instance_group
    assert (first.name, first.kind, first.count) == ("m_0", first.KIND_CPU, 3)
    assert (second.name, second.count, list(second.gpus)) == ("mine", 1, [1])
    assert (third.name, third.kind, list(third.gpus)) == ("m_2", third.KIND_GPU, [0, 1])


def test_kind_auto_with_missing_gpu_falls_back_to_cpu_and_fails() -> None:
    with pytest.raises(ConfigError, match="KIND_CPU but specifies GPUs"):
        _defaults("instance_group [ { kind: KIND_AUTO gpus: [5] } ]", gpu_count=2)


def test_explicit_cpu_group_without_count_gets_ort_default() -> None:
    config = _defaults("instance_group [ { kind: KIND_CPU }, { kind: KIND_GPU } ]", gpu_count=1)
    assert [g.count for g in config.instance_group] == [2, 1]


def test_instance_group_tensorrt_default_count_is_one() -> None:
    config = _defaults("", gpu_count=1, backend="tensorrt")
    assert config.instance_group[0].count == 1


def test_kind_gpu_without_gpu_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no GPUs are available"):
        _defaults("instance_group [ { kind: KIND_GPU } ]")


def test_unknown_gpu_id_is_an_error() -> None:
    with pytest.raises(ConfigError, match="GPU id"):
        _defaults("instance_group [ { kind: KIND_GPU gpus: [3] } ]", gpu_count=1)


def test_kind_cpu_with_gpus_is_an_error() -> None:
    with pytest.raises(ConfigError, match="specifies GPUs"):
        _defaults("instance_group [ { kind: KIND_CPU gpus: [0] } ]", gpu_count=1)


def test_tensorrt_on_cpu_is_an_error() -> None:
    with pytest.raises(ConfigError, match="TensorRT backend supports only GPU device"):
        _defaults("", backend="tensorrt")


# --- validation --------------------------------------------------------------------------

VALID_IO = """
backend: "onnxruntime"
max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""


def _validate(extra: str, base: str = VALID_IO) -> None:
    config = config_io.parse_pbtxt(base + extra)
    _identity(config)
    normalize.apply_defaults(config)
    normalize.validate(config, path="config.pbtxt")


def test_valid_config_passes() -> None:
    _validate(
        "dynamic_batching { preferred_batch_size: [2, 4] priority_levels: 2"
        " default_priority_level: 2 priority_queue_policy { key: 1 value { max_queue_size: 3 } } }"
    )


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('name: "m" backend: "onnxruntime" max_batch_size: -1', "max_batch_size"),
        ('backend: "onnxruntime" input [ { data_type: TYPE_FP32 dims: 1 } ]', "no 'name'"),
        ('backend: "onnxruntime" input [ { name: "x" dims: 1 } ]', "no data_type"),
        ('backend: "onnxruntime" output [ { name: "y" data_type: TYPE_FP32 } ]', "no dims"),
        ('backend: "onnxruntime" input [ { name: "x" data_type: TYPE_FP32 dims: 0 } ]', ">= 1"),
        (
            'backend: "onnxruntime" input [ { name: "x" data_type: TYPE_FP32 dims: [2, 3]'
            " reshape { shape: [5] } } ]",
            "element counts",
        ),
        (
            'backend: "onnxruntime" input [ { name: "x" data_type: TYPE_FP32 dims: [1]'
            " reshape { } } ]",
            "empty reshape",
        ),
        (
            'backend: "onnxruntime" input [ { name: "x" data_type: TYPE_FP32 dims: [2]'
            " format: FORMAT_NCHW } ]",
            "3 dims",
        ),
        (
            'backend: "onnxruntime" input [ { name: "x" data_type: TYPE_FP32 dims: 1 },'
            ' { name: "x" data_type: TYPE_FP32 dims: 1 } ]',
            "duplicate input",
        ),
        (
            'backend: "onnxruntime" output [ { name: "y" data_type: TYPE_FP32 dims: 1 },'
            ' { name: "y" data_type: TYPE_FP32 dims: 1 } ]',
            "duplicate output",
        ),
    ],
)
def test_invalid_tensors(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        _validate("", base=text)
    assert info.value.path == "config.pbtxt"
    assert info.value.hint


def test_reshape_with_variable_dims_is_checked_per_segment() -> None:
    _validate(
        "",
        base='backend: "onnxruntime" input [ { name: "x" data_type: TYPE_FP32'
        " dims: [2, 4, -1, 6] reshape { shape: [8, -1, 1, 6] } } ]",
    )
    with pytest.raises(ConfigError, match="element counts"):
        _validate(
            "",
            base='backend: "onnxruntime" input [ { name: "x" data_type: TYPE_FP32'
            " dims: [2, -1] reshape { shape: [-1, 2] } } ]",
        )


def test_empty_reshape_is_allowed_when_batching() -> None:
    _validate(
        "",
        base='backend: "onnxruntime" max_batch_size: 2 input [ { name: "x"'
        " data_type: TYPE_FP32 dims: [1] reshape { } } ]",
    )


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("dynamic_batching { preferred_batch_size: [8] }", "preferred_batch_size 8"),
        ("dynamic_batching { preferred_batch_size: [0] }", "preferred_batch_size 0"),
        ("dynamic_batching { priority_levels: 2 }", "default_priority_level 0"),
        ("dynamic_batching { priority_levels: 2 default_priority_level: 3 }", "outside"),
        (
            "dynamic_batching { priority_levels: 2 default_priority_level: 1"
            " priority_queue_policy { key: 3 value { } } }",
            r"level\(s\) \[3\]",
        ),
        ("dynamic_batching { priority_queue_policy { key: 1 value { } } }", "outside"),
        (
            "dynamic_batching { preserve_ordering: true priority_levels: 2"
            " default_priority_level: 1 }",
            "one priority level",
        ),
        (
            "dynamic_batching { preserve_ordering: true default_queue_policy {"
            " timeout_action: DELAY default_timeout_microseconds: 10 } }",
            "DELAY",
        ),
    ],
)
def test_invalid_dynamic_batching(extra: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _validate(extra)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("ensemble_scheduling { }", "ensemble"),
        ("model_transaction_policy { decoupled: true }", "decoupled"),
        ("batch_input [ { kind: BATCH_ELEMENT_COUNT } ]", "batch_input"),
    ],
)
def test_unsupported_features(extra: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        _validate(extra)
    assert "not supported by Volley" in info.value.message
