"""Repository layout, version directories, model files and version policy."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from google.protobuf import text_format

from volley._proto.inference import model_config_pb2 as mc
from volley.backends import BackendInspector
from volley.errors import ConfigError
from volley.repository import layout, policy
from volley.repository.loader import load_model_config

from onnx_models import identity, make_model_dir

INSPECTOR = BackendInspector()


def test_list_models_skips_hidden_dirs_and_files(tmp_path: Path) -> None:
    for name in ("b", "a", ".git", ".hidden_model"):
        (tmp_path / name).mkdir()
    (tmp_path / "README.md").write_text("not a model")
    assert layout.list_models(tmp_path) == {"a": tmp_path / "a", "b": tmp_path / "b"}


def test_list_models_of_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as info:
        layout.list_models(tmp_path / "nope")
    assert info.value.path == str(tmp_path / "nope")
    assert info.value.hint


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("1", 1),
        ("10", 10),
        ("123456789", 123456789),
        ("0", None),
        ("01", None),
        ("007", None),
        ("-1", None),
        ("+1", None),
        ("1a", None),
        ("v1", None),
        ("", None),
        ("\u0661", None),
        (" 1", None),
    ],
)
def test_version_of_dir(name: str, version: int | None) -> None:
    assert layout.version_of_dir(name) == version


def test_list_versions_applies_tritons_rules(tmp_path: Path) -> None:
    for name in ("1", "2", "10", "0", "01", "abc", "warmup", "configs", "initial_state", ".3"):
        (tmp_path / name).mkdir()
    (tmp_path / "5").write_text("a file, not a version directory")
    versions = layout.list_versions(tmp_path)
    assert list(versions) == [1, 2, 10]
    assert versions[10] == tmp_path / "10"


def test_non_numeric_version_dir_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "latest").mkdir()
    with caplog.at_level(logging.WARNING, logger="volley.repository"):
        assert layout.list_versions(tmp_path) == {}
    assert "latest" in caplog.text


def test_model_file_defaults_and_override(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"x")
    (tmp_path / "model.plan").write_bytes(b"x")
    (tmp_path / "custom.bin").write_bytes(b"x")
    assert layout.model_file(tmp_path, "onnxruntime") == tmp_path / "model.onnx"
    assert layout.model_file(tmp_path, "tensorrt") == tmp_path / "model.plan"
    assert layout.model_file(tmp_path, "onnxruntime", "custom.bin") == tmp_path / "custom.bin"
    assert layout.model_file(tmp_path, "onnxruntime", "missing.onnx") is None


def test_model_onnx_may_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").mkdir()
    assert layout.model_file(tmp_path, "onnxruntime") is None
    (tmp_path / "model.onnx" / "model.onnx").write_bytes(b"x")
    assert layout.model_file(tmp_path, "onnxruntime") == tmp_path / "model.onnx" / "model.onnx"


def test_model_plan_directory_is_not_a_plan(tmp_path: Path) -> None:
    (tmp_path / "model.plan").mkdir()
    assert layout.model_file(tmp_path, "tensorrt") is None
    assert layout.detect_backend({1: tmp_path}) is None


def test_detect_backend(tmp_path: Path) -> None:
    onnx_dir, plan_dir, empty = tmp_path / "1", tmp_path / "2", tmp_path / "3"
    for d in (onnx_dir, plan_dir, empty):
        d.mkdir()
    (onnx_dir / "model.onnx").mkdir()
    (plan_dir / "model.plan").write_bytes(b"x")
    assert layout.detect_backend({1: onnx_dir}) == "onnxruntime"
    assert layout.detect_backend({2: plan_dir}) == "tensorrt"
    assert layout.detect_backend({3: empty, 2: plan_dir}) == "tensorrt"
    assert layout.detect_backend({3: empty}) is None
    assert layout.detect_backend({}, "resnet.onnx") == "onnxruntime"
    assert layout.detect_backend({}, "resnet.plan") == "tensorrt"


# --- version policy ----------------------------------------------------------------------


def _policy(text: str) -> mc.ModelVersionPolicy:
    config = mc.ModelConfig()
    text_format.Parse(f"version_policy {{ {text} }}", config)
    return config.version_policy


def test_default_policy_is_latest_one() -> None:
    assert policy.select_versions(mc.ModelVersionPolicy(), [3, 1, 2]) == [3]


@pytest.mark.parametrize(
    ("text", "available", "expected"),
    [
        ("latest { num_versions: 1 }", [1, 2, 10], [10]),
        ("latest { num_versions: 2 }", [9, 10, 1], [9, 10]),
        ("latest { num_versions: 5 }", [1, 2], [1, 2]),
        ("latest { num_versions: 0 }", [1, 2], []),
        ("latest { }", [1, 2], []),
        ("all { }", [3, 1, 2], [1, 2, 3]),
        ("all { }", [], []),
        ("specific { versions: [2, 1] }", [1, 2, 3], [1, 2]),
    ],
)
def test_select_versions(text: str, available: list[int], expected: list[int]) -> None:
    assert policy.select_versions(_policy(text), available) == expected


def test_specific_skips_missing_versions_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="volley.repository"):
        selected = policy.select_versions(_policy("specific { versions: [1, 7] }"), [1, 2])
    assert selected == [1]
    assert "version 7" in caplog.text


def test_specific_selecting_nothing_is_an_error() -> None:
    with pytest.raises(ConfigError, match="selects no available version") as info:
        policy.select_versions(_policy("specific { versions: [7] }"), [1, 2], path="cfg")
    assert info.value.path == "cfg"
    assert info.value.hint


# --- versions through the loader ---------------------------------------------------------


def test_loader_serves_selected_versions(tmp_path: Path) -> None:
    model_dir = make_model_dir(
        tmp_path,
        "m",
        identity(),
        config="version_policy { latest { num_versions: 2 } }",
        versions=[1, 2, 10, "01", "0"],
    )
    loaded = load_model_config(model_dir, INSPECTOR.read_signature)
    assert loaded.versions == {
        2: model_dir / "2" / "model.onnx",
        10: model_dir / "10" / "model.onnx",
    }


def test_loader_selected_version_without_model_file(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path, "m", identity(), config="version_policy { all { } }")
    (model_dir / "2").mkdir()
    with pytest.raises(ConfigError, match="version 2 has no model file") as info:
        load_model_config(model_dir, INSPECTOR.read_signature)
    assert info.value.path == str(model_dir / "2" / "model.onnx")
    assert info.value.hint


def test_loader_ignores_unselected_broken_version(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path, "m", identity(), versions=[3])
    (model_dir / "1").mkdir()
    assert list(load_model_config(model_dir, INSPECTOR.read_signature).versions) == [3]


def test_loader_model_without_versions(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path, "m", config='backend: "onnxruntime"', versions=[])
    (model_dir / "01").mkdir()
    with pytest.raises(ConfigError, match="no version directories") as info:
        load_model_config(model_dir, INSPECTOR.read_signature)
    assert info.value.path == str(model_dir)


def test_loader_policy_selecting_nothing(tmp_path: Path) -> None:
    model_dir = make_model_dir(
        tmp_path, "m", identity(), config="version_policy { latest { num_versions: 0 } }"
    )
    with pytest.raises(ConfigError, match="selects no version") as info:
        load_model_config(model_dir, INSPECTOR.read_signature)
    assert info.value.path == str(model_dir / "config.pbtxt")


def test_loader_onnx_directory_model(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path, "m", identity(), filename="model.onnx/model.onnx")
    loaded = load_model_config(model_dir, INSPECTOR.read_signature)
    assert loaded.versions == {1: model_dir / "1" / "model.onnx" / "model.onnx"}
    assert loaded.config.backend == "onnxruntime"


def test_loader_missing_model_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_model_config(tmp_path / "absent", INSPECTOR.read_signature)
