"""traffic.yaml: parsing, validation, and the versions it makes the loader serve."""

from __future__ import annotations

from pathlib import Path

import pytest

from volley.backends import BackendInspector
from volley.errors import ConfigError
from volley.repository.check import check_repository
from volley.repository.loader import load_model_config
from volley.repository.traffic import Shadow, TrafficPolicy, parse_traffic, read_traffic

from onnx_models import add_constant, make_model_dir

GOOD = """
labels: {stable: 3, canary: 4}
split: {3: 90, 4: 10}
sticky: request_parameter:user_id
shadow: {version: 5, percent: 25}
"""


def test_a_full_file(tmp_path: Path) -> None:
    (tmp_path / "traffic.yaml").write_text(GOOD)
    policy = read_traffic(tmp_path)
    assert policy == TrafficPolicy(
        labels={"stable": 3, "canary": 4},
        split=((3, 90.0), (4, 10.0)),
        sticky_parameter="user_id",
        shadow=Shadow(5, 25.0),
    )
    assert policy.versions() == {3, 4, 5}
    assert policy.describe()["sticky"] == "request_parameter:user_id"
    assert read_traffic(tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ("[1, 2]", "mapping"),
        ("colour: red", "unknown traffic key"),
        ("labels: {'3': 1}", "label '3'"),
        ("labels: {'has space': 1}", "label 'has space'"),
        ("labels: {stable: 0}", "version number"),
        ("labels: {stable: latest}", "version number"),
        ("split: {1: -5, 2: 10}", "negative"),
        ("split: {1: 0}", "add up to 0"),
        ("split: {x: 1}", "version number"),
        ("split: {1: heavy}", "expected a number"),
        ("sticky: cookie:id\nsplit: {1: 1}", "request_parameter"),
        ("sticky: request_parameter:user", "needs a split"),
        ("shadow: {version: 2, percent: 0}", r"\(0, 100\]"),
        ("shadow: {version: 2, percent: 150}", r"\(0, 100\]"),
        ("shadow: {version: 2, share: 5}", "shadow"),
        ("labels: &a {x: 1}\nsplit: *a", "aliases"),
        ("labels: {stable: 1", "invalid YAML"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, doc: str, match: str) -> None:
    (tmp_path / "traffic.yaml").write_text(doc)
    with pytest.raises(ConfigError, match=match) as info:
        read_traffic(tmp_path)
    assert "traffic.yaml" in (info.value.path or "")


def test_an_empty_file_is_no_policy() -> None:
    assert parse_traffic(None, path="x") == TrafficPolicy()


def test_the_loader_serves_every_version_the_policy_names(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path, "m", add_constant(1.0), versions=(1, 2, 3, 4))
    (model_dir / "config.pbtxt").write_text('backend: "onnxruntime"\nmax_batch_size: 4\n')
    (model_dir / "traffic.yaml").write_text("labels: {stable: 1}\nshadow: {version: 2}\n")
    loaded = load_model_config(model_dir, BackendInspector().read_signature)
    assert sorted(loaded.versions) == [1, 2, 4]  # the latest by policy, plus 1 and 2
    assert loaded.traffic is not None and loaded.traffic.labels == {"stable": 1}
    override = parse_traffic({"labels": {"only": 3}}, path="request")
    loaded = load_model_config(
        model_dir, BackendInspector().read_signature, traffic_override=override
    )
    assert sorted(loaded.versions) == [3, 4]


def test_missing_versions_are_a_repository_problem(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path, "m", add_constant(1.0), versions=(1, 2))
    (model_dir / "config.pbtxt").write_text('backend: "onnxruntime"\nmax_batch_size: 4\n')
    (model_dir / "traffic.yaml").write_text("split: {1: 50, 7: 50}\n")
    with pytest.raises(ConfigError, match=r"version\(s\) \[7\]"):
        load_model_config(model_dir, BackendInspector().read_signature)
    problems = check_repository(tmp_path, BackendInspector())
    assert len(problems) == 1 and "[7]" in problems[0].message
    assert problems[0].path.endswith("traffic.yaml")
