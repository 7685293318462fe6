"""Routing by weight and sticky key, shadow sampling and comparison, and the response cache."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from volley.model.spec import ModelSpec
from volley.repository.traffic import Shadow, TrafficPolicy
from volley.serving.cache import ResponseCache, parse_cache_config
from volley.serving.registry import ModelEntry, ModelState, ModelVersion
from volley.serving.traffic import Router, compare
from volley.telemetry.stats import ShadowStats

SPEC = ModelSpec(
    name="m", platform="onnxruntime_onnx", backend="onnxruntime", max_batch_size=4,
    inputs=(), outputs=(), batching=None,
)  # fmt: skip


def entry(policy: TrafficPolicy, ready: tuple[int, ...] = (1, 2, 3)) -> ModelEntry:
    versions = {}
    for v in (1, 2, 3):
        mv = ModelVersion("m", v, SPEC)
        mv.state = ModelState.READY if v in ready else ModelState.UNAVAILABLE
        versions[v] = mv
    return ModelEntry.of("m", versions, traffic=policy)


def test_weights_hold_within_two_percent_over_ten_thousand_requests() -> None:
    e = entry(TrafficPolicy(split=((1, 70.0), (2, 20.0), (3, 10.0))))
    assert e.router is not None
    counts = Counter(e.router.pick(e, None).version for _ in range(10_000))  # type: ignore[union-attr]
    for version, share in ((1, 0.7), (2, 0.2), (3, 0.1)):
        assert abs(counts[version] / 10_000 - share) <= 0.02, counts


def test_sticky_keys_stay_on_one_version_across_restarts() -> None:
    policy = TrafficPolicy(split=((1, 50.0), (2, 50.0)), sticky_parameter="user")
    first, restarted = entry(policy), entry(policy)
    assert first.router is not restarted.router
    chosen = {}
    for user in range(500):
        params = {"user": f"u{user}"}
        mv = first.router.pick(first, params)  # type: ignore[union-attr]
        assert mv is not None
        chosen[user] = mv.version
        for _ in range(3):
            assert first.router.pick(first, params).version == mv.version  # type: ignore[union-attr]
        assert restarted.router.pick(restarted, params).version == mv.version  # type: ignore[union-attr]
    share = sum(v == 1 for v in chosen.values()) / len(chosen)
    assert 0.4 < share < 0.6


def test_versions_that_are_not_ready_take_no_traffic() -> None:
    e = entry(TrafficPolicy(split=((1, 50.0), (2, 50.0))), ready=(2, 3))
    assert {e.router.pick(e, None).version for _ in range(200)} == {2}  # type: ignore[union-attr]
    none_ready = entry(TrafficPolicy(split=((1, 1.0),)), ready=(3,))
    assert none_ready.router.pick(none_ready, None) is None  # type: ignore[union-attr]


def test_labels_resolve_and_unknown_ones_are_named() -> None:
    e = entry(TrafficPolicy(labels={"stable": 1, "canary": 2}))
    assert e.version_number("canary") == 2 and e.version_number("3") == 3
    with pytest.raises(Exception, match="labels: canary, stable"):
        e.version_number("beta")


def test_a_router_keeps_its_state_when_the_policy_is_unchanged() -> None:
    policy = TrafficPolicy(shadow=Shadow(3, 50.0))
    e = entry(policy)
    again = ModelEntry.of("m", e.versions, traffic=policy, router=e.router)
    assert again.router is e.router
    changed = ModelEntry.of("m", e.versions, traffic=TrafficPolicy(), router=e.router)
    assert changed.router is not e.router


def test_shadow_percent_is_exact() -> None:
    router = Router(TrafficPolicy(shadow=Shadow(3, 25.0)))
    assert sum(router.shadowed() for _ in range(1000)) == 250
    assert not Router(TrafficPolicy()).shadowed()


def test_compare_scores_difference_and_top1() -> None:
    stats = ShadowStats("m", 1, 2)
    a = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], np.float32)
    b = np.array([[0.2, 0.8], [0.4, 0.6], [0.3, 0.7]], np.float32)
    compare({"P": a}, {"P": b, "extra": a}, stats)
    assert stats.compared == 1 and stats.top1_rows == 3 and stats.top1_agree == 2
    assert stats.diff_max == pytest.approx(0.4, abs=1e-6)
    compare({"P": a}, {"P": b[:2]}, stats)
    assert stats.mismatched == 1 and stats.compared == 1
    compare({"P": a}, {"P": a}, stats)
    view = stats.view()
    assert view["compared"] == 2 and view["max_abs_diff"] == pytest.approx(0.4, abs=1e-6)


def outputs(value: float, n: int = 10) -> dict[str, np.ndarray]:
    return {"Y": np.full((1, n), value, np.float32)}


def test_cache_hits_return_the_stored_bytes() -> None:
    cache = ResponseCache(1 << 20)
    x = {"X": np.arange(8, dtype=np.float32).reshape(1, 8)}
    key = ResponseCache.key("m", 1, 7, x, ["Y"])
    assert cache.get(key) is None
    original = outputs(3.5)
    assert cache.put(key, original)
    original["Y"][:] = 0  # the cache holds a copy
    hit = cache.get(key)
    assert hit is not None and hit["Y"].tobytes() == outputs(3.5)["Y"].tobytes()
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 1)
    other = {"X": x["X"] + 1}
    assert ResponseCache.key("m", 1, 7, other, ["Y"]) != key
    assert ResponseCache.key("m", 1, 8, x, ["Y"]) != key  # another load of the version
    assert ResponseCache.key("m", 2, 7, x, ["Y"]) != key
    assert ResponseCache.key("m", 1, 7, x, []) != key
    text = {"T": np.array([b"ab", b"c"], dtype=object)}
    assert ResponseCache.key("m", 1, 7, text, []) != ResponseCache.key(
        "m", 1, 7, {"T": np.array([b"a", b"bc"], dtype=object)}, []
    )


def test_cache_size_bound_and_lru_order() -> None:
    one = ResponseCache(1 << 20).put(b"k", outputs(1.0, 100))
    assert one
    entry_bytes = 100 * 4 + 256
    cache = ResponseCache(3 * entry_bytes)
    for i in range(3):
        cache.put(bytes([i]), outputs(float(i), 100))
    assert cache.get(bytes([0])) is not None  # 0 is now the most recently used
    cache.put(bytes([3]), outputs(3.0, 100))
    assert cache.get(bytes([1])) is None  # the least recently used went first
    assert cache.get(bytes([0])) is not None and cache.get(bytes([2])) is not None
    assert cache.bytes <= cache.capacity and cache.evictions == 1
    assert not cache.put(b"huge", outputs(1.0, 10_000))
    assert cache.bytes <= cache.capacity


@pytest.mark.parametrize(
    ("values", "size"),
    [([], 0), (["local,size=1048576"], 1 << 20), (["local,size=2MiB"], 2 << 20)],
)
def test_cache_config(values: list[str], size: int) -> None:
    assert parse_cache_config(values) == size


@pytest.mark.parametrize("value", ["redis,size=10", "local,size=big", "local,ttl=5"])
def test_bad_cache_config(value: str) -> None:
    with pytest.raises(ValueError, match="--cache-config"):
        parse_cache_config([value])
