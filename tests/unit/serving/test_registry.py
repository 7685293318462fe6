"""The registry: default version, request resolution and its protocol errors, snapshots."""

from __future__ import annotations

import pytest

from volley.errors import InvalidArgument, NotFound, Unavailable
from volley.model.spec import ModelSpec, TensorSpec
from volley.serving.registry import (
    ModelEntry,
    ModelState,
    ModelVersion,
    Registry,
    parse_request_version,
)

SPEC = ModelSpec(
    name="m",
    platform="onnxruntime_onnx",
    backend="onnxruntime",
    max_batch_size=0,
    inputs=(TensorSpec("x", "FP32", (2,)),),
    outputs=(TensorSpec("y", "FP32", (2,)),),
    batching=None,
)


def version(number: int, state: ModelState = ModelState.READY, name: str = "m") -> ModelVersion:
    return ModelVersion(name, number, SPEC, state=state)


def registry_with(*versions: ModelVersion, name: str = "m") -> Registry:
    registry = Registry()
    registry.publish(ModelEntry.of(name, {v.version: v for v in versions}))
    return registry


def test_model_version_defaults() -> None:
    mv = ModelVersion("m", 7, SPEC)
    assert mv.state is ModelState.LOADING
    assert not mv.ready
    assert mv.version_str == "7"
    assert (mv.stats.name, mv.stats.version) == ("m", 7)
    mv.state = ModelState.READY
    assert mv.ready


def test_default_is_highest_ready_version() -> None:
    v1, v2, v3 = version(1), version(2), version(3, ModelState.UNAVAILABLE)
    entry = ModelEntry.of("m", {3: v3, 1: v1, 2: v2})
    assert entry.default is v2
    assert not entry.failed
    assert entry.reason == ""


def test_default_ignores_order_of_the_dict() -> None:
    v10, v9 = version(10), version(9)
    assert ModelEntry.of("m", {10: v10, 9: v9}).default is v10
    assert ModelEntry.of("m", {9: v9, 10: v10}).default is v10


def test_no_ready_version_means_no_default() -> None:
    entry = ModelEntry.of(
        "m", {1: version(1, ModelState.LOADING), 2: version(2, ModelState.UNLOADING)}
    )
    assert entry.default is None
    assert not entry.failed


def test_entry_copies_the_versions_dict() -> None:
    versions = {1: version(1)}
    entry = ModelEntry.of("m", versions)
    versions[2] = version(2)
    assert list(entry.versions) == [1]


@pytest.mark.parametrize(
    ("versions", "reason", "failed"),
    [
        ({}, "broken config", True),
        ({}, "", False),
        ({1: version(1, ModelState.UNAVAILABLE)}, "load failed", False),
    ],
)
def test_failed(versions: dict[int, ModelVersion], reason: str, failed: bool) -> None:
    assert ModelEntry.of("m", versions, reason).failed is failed


def test_resolve_without_version_gives_default() -> None:
    v1, v2 = version(1), version(2)
    registry = registry_with(v1, v2)
    assert registry.resolve("m", "") is v2
    assert registry.resolve("m", "1") is v1
    assert registry.resolve("m", "2") is v2


def test_resolve_unknown_model() -> None:
    registry = registry_with(version(1))
    with pytest.raises(NotFound, match="unknown model: 'other'"):
        registry.resolve("other", "")
    with pytest.raises(NotFound, match="unknown model"):
        registry.resolve("other", "1")


def test_resolve_unknown_version() -> None:
    registry = registry_with(version(1))
    with pytest.raises(NotFound, match="'m' version 5 is not found"):
        registry.resolve("m", "5")


def test_resolve_without_any_ready_version() -> None:
    registry = registry_with(version(1, ModelState.UNAVAILABLE))
    with pytest.raises(NotFound, match="no available versions"):
        registry.resolve("m", "")


@pytest.mark.parametrize(
    "state", [ModelState.LOADING, ModelState.UNLOADING, ModelState.UNAVAILABLE]
)
def test_resolve_version_not_ready_is_unavailable(state: ModelState) -> None:
    registry = registry_with(version(1), version(2, state))
    with pytest.raises(Unavailable, match="version 2 is not at ready state"):
        registry.resolve("m", "2")


@pytest.mark.parametrize("text", ["abc", "-1", "+1", "1.0", " 1", "1 ", "\u00b2", "\u0661", "0x1"])
def test_resolve_invalid_version_string(text: str) -> None:
    registry = registry_with(version(1))
    with pytest.raises(InvalidArgument, match="non-negative integer") as info:
        registry.resolve("m", text)
    assert not isinstance(info.value, NotFound)
    with pytest.raises(InvalidArgument):
        registry.lookup("m", text)


@pytest.mark.parametrize(("text", "number"), [("0", 0), ("1", 1), ("007", 7), ("123", 123)])
def test_parse_request_version(text: str, number: int) -> None:
    assert parse_request_version(text) == number


def test_lookup_returns_versions_that_are_not_ready() -> None:
    v1, v2 = version(1, ModelState.UNAVAILABLE), version(2, ModelState.LOADING)
    registry = registry_with(v1, v2)
    assert registry.lookup("m", "1") is v1
    assert registry.lookup("m", "2") is v2
    # Without a version and without a READY one: the highest version.
    assert registry.lookup("m", "") is v2


def test_lookup_prefers_default_over_newer_unready_version() -> None:
    v1, v2 = version(1), version(2, ModelState.UNAVAILABLE)
    registry = registry_with(v1, v2)
    assert registry.lookup("m", "") is v1


def test_lookup_errors() -> None:
    registry = registry_with(version(1))
    with pytest.raises(NotFound, match="unknown model"):
        registry.lookup("nope", "")
    with pytest.raises(NotFound, match="version 3 is not found"):
        registry.lookup("m", "3")
    registry.publish(ModelEntry.of("empty", {}, "broken"))
    with pytest.raises(NotFound, match="no available versions"):
        registry.lookup("empty", "")


def test_publish_replaces_the_whole_entry() -> None:
    old_v1, old_v2 = version(1), version(2)
    registry = registry_with(old_v1, old_v2)
    before = registry.get("m")
    assert before is not None
    new_v3 = version(3)
    registry.publish(ModelEntry.of("m", {3: new_v3}))
    after = registry.get("m")
    assert after is not None and after is not before
    assert list(after.versions) == [3]
    assert registry.resolve("m", "") is new_v3
    with pytest.raises(NotFound):
        registry.resolve("m", "1")
    # A reader holding the old snapshot still sees it, unchanged.
    assert list(before.versions) == [1, 2]
    assert before.default is old_v2


def test_get_and_entries_sorted_by_name() -> None:
    registry = Registry()
    assert registry.get("m") is None
    assert registry.entries() == []
    for name in ("zeta", "alpha", "mid"):
        registry.publish(ModelEntry.of(name, {1: version(1, name=name)}))
    assert [e.name for e in registry.entries()] == ["alpha", "mid", "zeta"]
    entry = registry.get("mid")
    assert entry is not None and entry.versions[1].name == "mid"


def test_entry_is_immutable() -> None:
    entry = ModelEntry.of("m", {1: version(1)})
    with pytest.raises(AttributeError):
        entry.default = None  # type: ignore[misc]
