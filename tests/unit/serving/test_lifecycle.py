"""The model lifecycle over a real (tiny) ONNX repository: load, reload, failures, unload."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest

from volley.errors import ConfigError, VolleyError
from volley.scheduler.request import InferRequest
from volley.serving.lifecycle import ModelManager
from volley.serving.registry import ModelEntry, ModelState, Registry

from onnx_models import identity, make_model_dir, unknown_op

ALL_VERSIONS = "version_policy: { all { } }\n"


def manager_for(*repos: Path) -> tuple[ModelManager, Registry]:
    registry = Registry()
    return ModelManager(list(repos), registry), registry


def entry_of(registry: Registry, name: str) -> ModelEntry:
    entry = registry.get(name)
    assert entry is not None, f"no entry for {name}"
    return entry


async def run_identity(registry: Registry, name: str, version: str = "") -> np.ndarray:
    mv = registry.resolve(name, version)
    assert mv.scheduler is not None
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    outputs = await mv.scheduler.infer(InferRequest(inputs={"x": x}, rows=2, shape_key=("x", 4)))
    return outputs["y"]


async def test_load_publishes_ready_versions_with_a_scheduler(tmp_path: Path) -> None:
    make_model_dir(tmp_path, "ident", identity(), versions=(1, 2, 3), config=ALL_VERSIONS)
    manager, registry = manager_for(tmp_path)
    try:
        await manager.load("ident")
        entry = entry_of(registry, "ident")
        assert sorted(entry.versions) == [1, 2, 3]
        assert entry.reason == ""
        assert not entry.failed
        for number, mv in entry.versions.items():
            assert mv.version == number
            assert mv.state is ModelState.READY
            assert mv.scheduler is not None
            assert mv.loaded is not None and len(mv.loaded.instances) >= 1
            assert mv.reason == "" and not mv.unloaded
            assert mv.stats.memory_bytes, "load records the memory it measured"
        assert entry.default is entry.versions[3]
        y = await run_identity(registry, "ident", "1")
        np.testing.assert_array_equal(y, np.arange(8, dtype=np.float32).reshape(2, 4))
    finally:
        await manager.shutdown()


async def test_default_policy_loads_only_the_latest_version(tmp_path: Path) -> None:
    make_model_dir(tmp_path, "ident", identity(), versions=(1, 2))
    manager, registry = manager_for(tmp_path)
    try:
        await manager.load("ident")
        assert list(entry_of(registry, "ident").versions) == [2]
    finally:
        await manager.shutdown()


async def test_reload_swaps_in_new_versions_and_releases_old_ones(tmp_path: Path) -> None:
    make_model_dir(tmp_path, "ident", identity(), versions=(1,))
    manager, registry = manager_for(tmp_path)
    try:
        await manager.load("ident")
        old = entry_of(registry, "ident")
        old_v1 = old.versions[1]
        make_model_dir(tmp_path, "ident", identity(), versions=(2,))
        await manager.load("ident")
        new = entry_of(registry, "ident")
        assert new is not old
        assert list(new.versions) == [2]
        assert new.versions[2] is not old_v1
        new_v2 = new.versions[2]
        assert new_v2.ready
        assert old_v1.state is ModelState.UNAVAILABLE
        assert old_v1.scheduler is None and old_v1.loaded is None
        # Reloading with nothing changed on disk keeps the serving version as it is.
        await manager.load("ident")
        again = entry_of(registry, "ident")
        assert again.versions[2] is new_v2
        assert again.versions[2].ready
        y = await run_identity(registry, "ident")
        assert y.shape == (2, 4)
    finally:
        await manager.shutdown()


async def test_load_of_missing_model_raises_config_error(tmp_path: Path) -> None:
    make_model_dir(tmp_path, "ident", identity())
    manager, registry = manager_for(tmp_path)
    with pytest.raises(ConfigError, match="'ghost': no such model"):
        await manager.load("ghost")
    assert registry.get("ghost") is None


@pytest.mark.parametrize(
    ("model", "reason_part"),
    [(unknown_op(), "NoSuchOperator"), (b"this is not an onnx file", "cannot read ONNX model")],
    ids=["unknown-op", "garbage"],
)
async def test_broken_model_publishes_a_reason_and_raises(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    model: onnx.ModelProto | bytes,
    reason_part: str,
) -> None:
    make_model_dir(tmp_path, "broken", model)
    manager, registry = manager_for(tmp_path)
    with (
        caplog.at_level(logging.ERROR, logger="volley.serving"),
        pytest.raises(VolleyError) as info,
    ):
        await manager.load("broken")
    assert reason_part in info.value.message
    entry = entry_of(registry, "broken")
    assert reason_part in entry.reason
    assert entry.default is None
    for mv in entry.versions.values():
        assert mv.state is ModelState.UNAVAILABLE
        assert reason_part in mv.reason
        assert mv.scheduler is None and mv.loaded is None
    assert "broken" in caplog.text
    await manager.shutdown()


async def test_failed_reload_keeps_serving_the_old_versions(tmp_path: Path) -> None:
    make_model_dir(tmp_path, "ident", identity(), versions=(1,))
    manager, registry = manager_for(tmp_path)
    try:
        await manager.load("ident")
        serving = entry_of(registry, "ident")
        (tmp_path / "ident" / "1" / "model.onnx").write_bytes(b"corrupt")
        with pytest.raises(VolleyError):
            await manager.load("ident")
        now = entry_of(registry, "ident")
        assert now.versions[1] is serving.versions[1]
        assert serving.versions[1].ready
        assert "cannot read ONNX model" in now.load_errors[1]
        assert (await run_identity(registry, "ident")).shape == (2, 4)
    finally:
        await manager.shutdown()


async def test_unload_marks_versions_unloaded(tmp_path: Path) -> None:
    make_model_dir(tmp_path, "ident", identity(), versions=(1, 2), config=ALL_VERSIONS)
    manager, registry = manager_for(tmp_path)
    await manager.load("ident")
    before = entry_of(registry, "ident")
    await manager.unload("ident")
    entry = entry_of(registry, "ident")
    assert entry is not before
    assert sorted(entry.versions) == [1, 2]
    assert entry.default is None
    for mv in entry.versions.values():
        assert mv.unloaded is True
        assert mv.state is ModelState.UNAVAILABLE
        assert mv.reason == "unloaded"
        assert mv.scheduler is None and mv.loaded is None
    assert not entry.failed


async def test_unload_of_unknown_model_is_a_no_op(tmp_path: Path) -> None:
    manager, registry = manager_for(tmp_path)
    await manager.unload("ghost")
    assert registry.get("ghost") is None


async def test_load_after_unload_serves_again(tmp_path: Path) -> None:
    make_model_dir(tmp_path, "ident", identity())
    manager, registry = manager_for(tmp_path)
    try:
        await manager.load("ident")
        await manager.unload("ident")
        await manager.load("ident")
        mv = entry_of(registry, "ident").versions[1]
        assert mv.ready and not mv.unloaded
    finally:
        await manager.shutdown()


async def test_shutdown_unloads_every_model(tmp_path: Path) -> None:
    for name in ("a", "b"):
        make_model_dir(tmp_path, name, identity())
    manager, registry = manager_for(tmp_path)
    await manager.load("a")
    await manager.load("b")
    await manager.shutdown()
    assert [e.name for e in registry.entries()] == ["a", "b"]
    for entry in registry.entries():
        assert entry.default is None
        for mv in entry.versions.values():
            assert mv.unloaded and mv.state is ModelState.UNAVAILABLE
            assert mv.scheduler is None


async def test_model_in_two_repositories_reports_a_reason(tmp_path: Path) -> None:
    first, second = tmp_path / "r1", tmp_path / "r2"
    make_model_dir(first, "dup", identity())
    make_model_dir(second, "dup", identity())
    make_model_dir(second, "only2", identity())
    manager, registry = manager_for(first, second)
    assert manager.model_dirs() == {"dup": None, "only2": second / "only2"}
    with pytest.raises(ConfigError, match="more than one repository"):
        await manager.load("dup")
    entry = entry_of(registry, "dup")
    assert entry.failed
    assert entry.versions == {}
    assert "'dup' appears in more than one repository" in entry.reason
