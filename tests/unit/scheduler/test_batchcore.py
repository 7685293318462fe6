"""Tests of the batching core, run over the Cython extension and its pure-Python twin."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

MODULES = {"cython": "volley.scheduler._batchcore_c", "python": "volley.scheduler._batchcore_py"}


@pytest.fixture(scope="module", params=sorted(MODULES))
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return importlib.import_module(MODULES[request.param])


def make(
    impl: ModuleType,
    max_batch_size: int = 8,
    preferred: Sequence[int] = (),
    delay: int = 0,
    levels: int = 0,
    sizes: Sequence[int] | None = None,
    delays: Sequence[bool] | None = None,
) -> Any:
    n = max(levels, 1)
    return impl.BatchQueue(
        max_batch_size,
        list(preferred),
        delay,
        levels,
        list(sizes) if sizes is not None else [0] * n,
        list(delays) if delays is not None else [False] * n,
    )


def test_selector_exports_one_implementation() -> None:
    from volley.scheduler import _batchcore as core

    assert core.IMPLEMENTATION in ("cython", "python")
    expected = importlib.import_module(MODULES[core.IMPLEMENTATION])
    assert core.BatchQueue is expected.BatchQueue
    assert core.gather is expected.gather
    assert core.split_rows is expected.split_rows


# Batch formation


def test_empty_queue_plans_nothing(impl: ModuleType) -> None:
    q = make(impl, delay=100)
    assert q.plan(0) == (0, -1)
    assert len(q) == 0
    assert q.queued_rows == 0


def test_preferred_size_sends_immediately(impl: ModuleType) -> None:
    q = make(impl, max_batch_size=8, preferred=[2, 4], delay=1000)
    for rid in range(3):
        assert q.push(rid, 1, 0, 0, 0, 0)
    assert q.plan(0) == (0, 1000)
    q.push(3, 1, 0, 0, 0, 0)
    assert q.plan(0) == (4, 0)
    q.push(4, 1, 0, 0, 0, 0)
    assert q.plan(0) == (4, 0)
    assert q.pop(4) == [0, 1, 2, 3]
    assert q.plan(0) == (0, 1000)


def test_overshooting_preferred_size_sends_walk(impl: ModuleType) -> None:
    q = make(impl, max_batch_size=8, preferred=[4], delay=1000)
    q.push(0, 3, 0, 0, 0, 0)
    assert q.plan(0) == (0, 1000)
    q.push(1, 2, 0, 0, 0, 0)
    assert q.plan(0) == (2, 0)


def test_delay_waits_until_oldest_request_has_waited(impl: ModuleType) -> None:
    q = make(impl, max_batch_size=8, delay=1000)
    q.push(0, 1, 0, 0, 100, 0)
    q.push(1, 1, 0, 0, 500, 0)
    assert q.plan(100) == (0, 1000)
    assert q.plan(600) == (0, 500)
    assert q.plan(1099) == (0, 1)
    assert q.plan(1100) == (2, 0)
    assert q.plan(5000) == (2, 0)


def test_oldest_arrival_is_earliest_not_first_pushed(impl: ModuleType) -> None:
    q = make(impl, max_batch_size=8, delay=1000)
    q.push(0, 1, 0, 0, 500, 0)
    q.push(1, 1, 0, 0, 100, 0)
    assert q.plan(600) == (0, 500)
    assert q.remove(1)
    assert q.plan(600) == (0, 900)


def test_zero_delay_sends_at_once(impl: ModuleType) -> None:
    q = make(impl, max_batch_size=8, preferred=[8], delay=0)
    q.push(0, 2, 0, 0, 0, 0)
    q.push(1, 3, 0, 0, 0, 0)
    assert q.plan(0) == (2, 0)
    assert q.pop(2) == [0, 1]
    assert q.queued_rows == 0


def test_max_batch_size_limits_batch(impl: ModuleType) -> None:
    q = make(impl, max_batch_size=4, delay=1000)
    q.push(0, 3, 0, 0, 0, 0)
    q.push(1, 2, 0, 0, 0, 0)
    assert q.plan(0) == (1, 0)
    assert q.pop(1) == [0]
    q.push(2, 2, 0, 0, 0, 0)
    q.push(3, 1, 0, 0, 0, 0)
    assert q.plan(0) == (2, 0)
    assert q.pop(2) == [1, 2]
    assert q.queued_rows == 1


def test_batch_size_one_sends_single_requests(impl: ModuleType) -> None:
    q = make(impl, max_batch_size=1, delay=1000)
    q.push(0, 1, 0, 0, 0, 0)
    q.push(1, 1, 0, 0, 0, 0)
    assert q.plan(0) == (1, 0)
    assert q.pop(1) == [0]
    assert q.plan(0) == (1, 0)


def test_shape_mismatch_stops_walk(impl: ModuleType) -> None:
    q = make(impl, max_batch_size=8, delay=1000)
    for rid, key in enumerate([7, 7, 9, 7]):
        q.push(rid, 1, 0, key, 0, 0)
    assert q.plan(0) == (2, 0)
    assert q.pop(2) == [0, 1]
    assert q.plan(0) == (1, 0)
    assert q.pop(1) == [2]
    assert q.plan(0) == (0, 1000)


def test_priority_levels_in_order(impl: ModuleType) -> None:
    q = make(impl, max_batch_size=8, delay=0, levels=3)
    q.push(0, 1, 3, 0, 0, 0)
    q.push(1, 1, 2, 0, 0, 0)
    q.push(2, 1, 1, 0, 0, 0)
    q.push(3, 1, 2, 0, 0, 0)
    assert q.plan(0) == (4, 0)
    assert q.pop(4) == [2, 1, 3, 0]


def test_priority_walk_stops_at_lower_level_mismatch(impl: ModuleType) -> None:
    q = make(impl, max_batch_size=8, delay=1000, levels=2)
    q.push(0, 1, 2, 5, 0, 0)
    q.push(1, 1, 1, 4, 0, 0)
    assert q.plan(0) == (1, 0)
    assert q.pop(1) == [1]


def test_fifo_within_level(impl: ModuleType) -> None:
    q = make(impl, max_batch_size=3, delay=0)
    for rid in [5, 3, 9, 1, 7]:
        q.push(rid, 1, 0, 0, 0, 0)
    assert q.pop(q.plan(0)[0]) == [5, 3, 9]
    assert q.pop(q.plan(0)[0]) == [1, 7]


def test_queue_full_per_level(impl: ModuleType) -> None:
    q = make(impl, levels=2, sizes=[1, 2])
    assert q.push(0, 1, 1, 0, 0, 0)
    assert not q.push(1, 1, 1, 0, 0, 0)
    assert q.push(2, 1, 2, 0, 0, 0)
    assert q.push(3, 1, 2, 0, 0, 0)
    assert not q.push(4, 1, 2, 0, 0, 0)
    assert (len(q), q.level_size(1), q.level_size(2), q.queued_rows) == (3, 1, 2, 3)
    assert q.pop(1) == [0]
    assert q.push(1, 1, 1, 0, 0, 0)
    assert q.remove(1)
    assert q.remove(2)
    assert q.push(4, 1, 2, 0, 0, 0)


def test_single_queue_size_limit(impl: ModuleType) -> None:
    q = make(impl, sizes=[2])
    assert q.push(0, 1, 0, 0, 0, 0)
    assert q.push(1, 4, 0, 0, 0, 0)
    assert not q.push(2, 1, 0, 0, 0, 0)
    assert q.level_size(0) == 2
    assert q.queued_rows == 5


# Timeouts


def test_reject_expires_exactly_on_time(impl: ModuleType) -> None:
    q = make(impl, delay=10_000)
    q.push(0, 1, 0, 0, 0, 1000)
    q.push(1, 1, 0, 0, 0, 0)
    assert q.expire(999) == []
    assert q.expire(1000) == [0]
    assert q.expire(10**12) == []
    assert len(q) == 1
    assert q.queued_rows == 1


def test_next_expiry_tracks_pending_timeouts(impl: ModuleType) -> None:
    q = make(impl, delay=10_000, levels=2, delays=[True, False])
    assert q.next_expiry_ns() == 0
    q.push(0, 1, 1, 0, 0, 700)
    q.push(1, 1, 2, 0, 0, 500)
    q.push(2, 1, 2, 0, 0, 0)
    assert q.next_expiry_ns() == 500
    assert q.remove(1)
    assert q.next_expiry_ns() == 700
    assert q.expire(700) == []  # DELAY: stays queued, never expires again
    assert q.next_expiry_ns() == 0
    assert len(q) == 2


def test_reject_returns_oldest_first(impl: ModuleType) -> None:
    q = make(impl, delay=10_000, levels=2)
    q.push(0, 1, 2, 0, 0, 2000)
    q.push(1, 1, 1, 0, 0, 1500)
    q.push(2, 1, 2, 0, 0, 1800)
    q.push(3, 1, 1, 0, 0, 2500)
    assert q.expire(2000) == [0, 1, 2]
    assert q.pop(1) == [3]


def test_plan_wait_includes_nearest_expiry(impl: ModuleType) -> None:
    q = make(impl, delay=10_000)
    q.push(0, 1, 0, 0, 0, 0)
    q.push(1, 1, 0, 0, 50, 900)
    q.push(2, 1, 0, 0, 60, 300)
    assert q.plan(100) == (0, 200)
    assert q.expire(300) == [2]
    assert q.plan(300) == (0, 600)
    assert q.remove(1)
    assert q.plan(300) == (0, 9700)


def test_due_expiry_not_yet_applied_waits_one_ns(impl: ModuleType) -> None:
    q = make(impl, delay=10_000)
    q.push(0, 1, 0, 0, 0, 100)
    assert q.plan(200) == (0, 1)


def test_delay_action_moves_behind_and_never_expires_again(impl: ModuleType) -> None:
    q = make(impl, max_batch_size=8, delay=1000, levels=2, delays=[True, False])
    q.push(0, 1, 1, 0, 0, 100)
    q.push(1, 1, 1, 0, 10, 0)
    q.push(2, 1, 1, 0, 20, 500)
    q.push(3, 1, 2, 0, 30, 0)
    assert q.plan(50) == (0, 50)
    assert q.expire(100) == []
    assert len(q) == 4
    assert q.plan(100) == (0, 400)
    q.push(4, 1, 1, 0, 150, 0)
    assert q.expire(500) == []
    assert q.plan(500) == (0, 500)
    assert q.expire(10**9) == []
    assert q.plan(1000) == (5, 0)
    assert q.pop(5) == [1, 4, 0, 2, 3]


def test_delayed_request_can_be_removed(impl: ModuleType) -> None:
    q = make(impl, delay=0, delays=[True])
    q.push(0, 1, 0, 0, 0, 10)
    q.push(1, 1, 0, 0, 0, 0)
    q.expire(10)
    assert q.remove(0)
    q.push(2, 1, 0, 0, 0, 0)
    assert q.pop(q.plan(20)[0]) == [1, 2]


# Cancellation and argument checks


def test_remove(impl: ModuleType) -> None:
    q = make(impl, max_batch_size=8, preferred=[2], delay=1000)
    q.push(0, 1, 0, 1, 0, 0)
    q.push(1, 1, 0, 2, 0, 500)
    q.push(2, 1, 0, 1, 0, 0)
    assert q.plan(0) == (1, 0)
    assert q.remove(1)
    assert not q.remove(1)
    assert not q.remove(42)
    assert (len(q), q.queued_rows) == (2, 2)
    assert q.plan(0) == (2, 0)
    assert q.expire(500) == []
    assert q.pop(2) == [0, 2]
    assert q.push(1, 1, 0, 0, 0, 0)


def test_push_rejects_bad_arguments(impl: ModuleType) -> None:
    q = make(impl, max_batch_size=4, levels=2)
    with pytest.raises(ValueError):
        q.push(0, 0, 1, 0, 0, 0)
    with pytest.raises(ValueError):
        q.push(0, 5, 1, 0, 0, 0)
    for level in (0, 3, -1):
        with pytest.raises(ValueError):
            q.push(0, 1, level, 0, 0, 0)
    q.push(0, 1, 1, 0, 0, 0)
    with pytest.raises(ValueError):
        q.push(0, 1, 2, 0, 0, 0)
    with pytest.raises(ValueError):
        q.level_size(0)
    with pytest.raises(ValueError):
        q.pop(2)
    with pytest.raises(ValueError):
        q.pop(-1)
    assert q.pop(0) == []
    single = make(impl)
    with pytest.raises(ValueError):
        single.push(0, 1, 1, 0, 0, 0)


@pytest.mark.parametrize(
    "args",
    [
        (0, [], 0, 0, [0], [False]),
        (4, [5], 0, 0, [0], [False]),
        (4, [0], 0, 0, [0], [False]),
        (4, [], -1, 0, [0], [False]),
        (4, [], 0, -1, [0], [False]),
        (4, [], 0, 0, [0, 0], [False]),
        (4, [], 0, 2, [0], [False, False]),
        (4, [], 0, 2, [0, 0], [False]),
        (4, [], 0, 0, [-1], [False]),
    ],
)
def test_bad_configuration(impl: ModuleType, args: tuple[Any, ...]) -> None:
    with pytest.raises(ValueError):
        impl.BatchQueue(*args)


def test_large_queue_grows_and_keeps_order(impl: ModuleType) -> None:
    q = make(impl, max_batch_size=7, delay=0)
    for rid in range(1000):
        q.push(rid, 1, 0, 0, rid, rid + 10_000)
    out: list[int] = []
    while len(q):
        out += q.pop(q.plan(0)[0])
    assert out == list(range(1000))


# Byte moves


def test_gather_split_round_trip(impl: ModuleType) -> None:
    parts = [np.arange(6, dtype=np.float32).reshape(2, 3) + 10 * i for i in range(3)]
    parts.append(np.zeros((0, 3), dtype=np.float32))
    parts.append(np.full((1, 3), 7, dtype=np.float32))
    dst = np.empty((7, 3), dtype=np.float32)
    assert impl.gather(parts, dst) == dst.nbytes
    np.testing.assert_array_equal(dst, np.concatenate(parts))
    views = impl.split_rows(dst, [p.shape[0] for p in parts])
    for view, part in zip(views, parts, strict=True):
        np.testing.assert_array_equal(view, part)
        assert view.base is dst or view.size == 0 or np.shares_memory(view, dst)


def test_gather_into_larger_buffer_and_bytes(impl: ModuleType) -> None:
    dst = bytearray(10)
    assert impl.gather([b"abc", memoryview(b"de"), np.array([1], dtype=np.uint8)], dst) == 6
    assert bytes(dst) == b"abcde\x01\x00\x00\x00\x00"
    assert impl.gather([], dst) == 0


def test_gather_errors_write_nothing(impl: ModuleType) -> None:
    dst = bytearray(4)
    with pytest.raises(ValueError):
        impl.gather([b"ab", b"cde"], dst)
    assert dst == bytearray(4)
    strided = np.arange(8, dtype=np.uint8)[::2]
    with pytest.raises(ValueError):
        impl.gather([b"a", strided], dst)
    assert dst == bytearray(4)
    with pytest.raises(ValueError):
        impl.gather([b"a"], b"read-only")
    with pytest.raises(ValueError):
        impl.gather([b"a"], np.zeros((4, 4), dtype=np.uint8)[:, 0])
    with pytest.raises(TypeError):
        impl.gather([object()], dst)


def test_split_rows_errors(impl: ModuleType) -> None:
    array = np.zeros((3, 2))
    with pytest.raises(ValueError):
        impl.split_rows(array, [2, 2])
    with pytest.raises(ValueError):
        impl.split_rows(array, [2])
    with pytest.raises(ValueError):
        impl.split_rows(array, [4, -1])
    with pytest.raises(ValueError):
        impl.split_rows(np.float32(1.0).reshape(()), [])
    assert [v.shape[0] for v in impl.split_rows(array, [0, 3, 0])] == [0, 3, 0]


@settings(max_examples=200, deadline=None)
@given(
    dtype=st.sampled_from(["u1", "f4", "f8", "i8", "f2", "c8", "?"]),
    inner=st.lists(st.integers(0, 3), max_size=2),
    rows=st.lists(st.integers(0, 4), min_size=1, max_size=6),
    slack=st.integers(0, 16),
)
def test_gather_split_property(
    impl: ModuleType, dtype: str, inner: list[int], rows: list[int], slack: int
) -> None:
    rng = np.random.default_rng(len(rows))
    parts = [(rng.random((r, *inner)) * 100).astype(dtype) for r in rows]
    total = sum(p.nbytes for p in parts)
    dst = np.full(total + slack, 0xAB, dtype=np.uint8)
    assert impl.gather(parts, dst) == total
    assert (dst[total:] == 0xAB).all()
    batch = dst[:total].view(dtype).reshape(sum(rows), *inner)
    for view, part in zip(impl.split_rows(batch, rows), parts, strict=True):
        np.testing.assert_array_equal(view, part)


# Model-based property tests


@dataclass
class Entry:
    rid: int
    rows: int
    index: int
    key: int
    arrival: int
    expire: int
    seq: int
    delayed: int | None = None


@dataclass
class Model:
    """Straightforward O(queue) statement of the batching rules."""

    max_batch_size: int
    preferred: list[int]
    delay: int
    levels: int
    sizes: list[int]
    delays: list[bool]
    queued: dict[int, Entry] = field(default_factory=dict)
    seq: int = 0
    delayed_seq: int = 0

    def index(self, level: int) -> int:
        return level - 1 if self.levels else level

    def order(self) -> list[Entry]:
        def rank(e: Entry) -> tuple[int, int, int]:
            return (e.index, e.delayed is not None, e.seq if e.delayed is None else e.delayed)

        return sorted(self.queued.values(), key=rank)

    def push(self, rid: int, rows: int, level: int, key: int, now: int, expire: int) -> bool:
        index = self.index(level)
        limit = self.sizes[index]
        if limit and sum(e.index == index for e in self.queued.values()) >= limit:
            return False
        self.queued[rid] = Entry(rid, rows, index, key, now, expire, self.seq)
        self.seq += 1
        return True

    def plan(self, now: int) -> tuple[int, int]:
        order = self.order()
        if not order:
            return (0, -1)
        pmax = max(self.preferred, default=self.max_batch_size)
        rows = 0
        n = 0
        for e in order:
            if e.key != order[0].key or rows + e.rows > self.max_batch_size:
                return (n, 0)
            rows += e.rows
            n += 1
            if rows == pmax:
                return (n, 0)
        oldest = min(e.arrival for e in order)
        if rows >= pmax or self.delay == 0 or now - oldest >= self.delay:
            return (n, 0)
        wait = self.delay - (now - oldest)
        expiries = [e.expire - now for e in order if e.expire and e.delayed is None]
        return (0, max(min([wait, *expiries]), 1))

    def pop(self, n: int) -> list[int]:
        rids = [e.rid for e in self.order()[:n]]
        for rid in rids:
            del self.queued[rid]
        return rids

    def expire(self, now: int) -> list[int]:
        due = [e for e in self.queued.values() if e.expire and e.delayed is None]
        rejected = []
        for e in sorted((e for e in due if e.expire <= now), key=lambda e: e.seq):
            if self.delays[e.index]:
                e.delayed = self.delayed_seq
                self.delayed_seq += 1
            else:
                del self.queued[e.rid]
                rejected.append(e.rid)
        return rejected


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    max_batch_size = draw(st.sampled_from([1, 2, 4, 8, 8, 8]))
    levels = draw(st.integers(0, 3))
    n = max(levels, 1)
    return {
        "max_batch_size": max_batch_size,
        "preferred": draw(st.lists(st.integers(1, max_batch_size), max_size=2, unique=True)),
        "delay": draw(st.sampled_from([0, 50, 200])),
        "levels": levels,
        "sizes": draw(st.lists(st.sampled_from([0, 1, 3]), min_size=n, max_size=n)),
        "delays": draw(st.lists(st.booleans(), min_size=n, max_size=n)),
    }


# Coarse clock steps and timeouts so that exact ties (expiry == now, age == delay) are common.
PUSH = st.tuples(
    st.just("push"),
    st.sampled_from([1, 1, 1, 2, 3, 8]),
    st.integers(0, 2),
    st.sampled_from([0, 0, 0, 1]),
    st.sampled_from([None, None, 0, 50, 100, 150, 250]),
    st.sampled_from([0, 0, 0, 40]),
)
OPS = st.sampled_from(["push"] * 5 + ["advance", "advance", "plan", "expire", "remove"]).flatmap(
    lambda kind: {
        "push": PUSH,
        "advance": st.tuples(st.just("advance"), st.sampled_from([0, 10, 25, 50, 100])),
        "plan": st.just(("plan",)),
        "expire": st.just(("expire",)),
        "remove": st.tuples(st.just("remove"), st.integers(0, 40)),
    }[kind]
)


def run_ops(impl: ModuleType, cfg: dict[str, Any], ops: list[tuple[Any, ...]]) -> list[Any]:
    """Apply ops to a queue and to the model, check every step, and return the outputs."""
    q = make(
        impl,
        cfg["max_batch_size"],
        cfg["preferred"],
        cfg["delay"],
        cfg["levels"],
        cfg["sizes"],
        cfg["delays"],
    )
    model = Model(**cfg)
    now = 1
    next_rid = 0
    accepted: list[int] = []
    returned: list[int] = []
    trace: list[Any] = []
    for op in ops:
        if op[0] == "push":
            _, raw_rows, raw_level, key, timeout, back = op
            rows = min(raw_rows, cfg["max_batch_size"])
            level = raw_level % cfg["levels"] + 1 if cfg["levels"] else 0
            arrival = max(now - back, 1)
            expire = 0 if timeout is None else arrival + timeout
            rid = next_rid * 7 + 3
            next_rid += 1
            ok = q.push(rid, rows, level, key, arrival, expire)
            assert ok == model.push(rid, rows, level, key, arrival, expire)
            if ok:
                accepted.append(rid)
            trace.append(("push", ok))
        elif op[0] == "advance":
            now += op[1]
        elif op[0] == "plan":
            n, wait = q.plan(now)
            assert (n, wait) == model.plan(now)
            if len(q):
                assert (n > 0 and wait == 0) or (n == 0 and wait > 0)
            else:
                assert (n, wait) == (0, -1)
            rows_before = q.queued_rows
            batch = q.pop(n)
            expected_order = model.order()
            assert batch == [e.rid for e in expected_order[:n]]
            assert batch == model.pop(n)
            entries = expected_order[:n]
            assert sum(e.rows for e in entries) <= cfg["max_batch_size"]
            assert len({e.key for e in entries}) <= 1
            assert q.queued_rows == rows_before - sum(e.rows for e in entries)
            returned += batch
            trace.append(("plan", n, wait, batch))
        elif op[0] == "expire":
            rejected = q.expire(now)
            assert rejected == model.expire(now)
            returned += rejected
            trace.append(("expire", rejected))
        else:
            rid = op[1] * 7 + 3
            removed = q.remove(rid)
            assert removed == (rid in model.queued)
            if removed:
                del model.queued[rid]
                returned.append(rid)
            trace.append(("remove", removed))
        assert len(q) == len(model.queued)
        assert q.queued_rows == sum(e.rows for e in model.queued.values())
        levels = range(1, cfg["levels"] + 1) if cfg["levels"] else [0]
        sizes = [q.level_size(level) for level in levels]
        assert sizes == [
            sum(e.index == model.index(level) for e in model.queued.values()) for level in levels
        ]
        trace.append(("state", len(q), q.queued_rows, sizes))
    assert len(returned) == len(set(returned))
    assert set(returned).isdisjoint(model.queued)
    assert sorted(returned + list(model.queued)) == sorted(accepted)
    final = []
    while len(q):
        n, wait = q.plan(now)
        assert (n, wait) == model.plan(now)
        if n == 0:
            now += wait
            rejected = q.expire(now)
            assert rejected == model.expire(now)
            returned += rejected
            continue
        batch = q.pop(n)
        assert batch == model.pop(n)
        final += batch
    assert sorted(returned + final) == sorted(accepted)
    trace.append(("drain", final))
    return trace


@settings(max_examples=200, deadline=None)
@given(cfg=configs(), ops=st.lists(OPS, min_size=10, max_size=60))
def test_operation_sequences_follow_the_rules(
    impl: ModuleType, cfg: dict[str, Any], ops: list[tuple[Any, ...]]
) -> None:
    run_ops(impl, cfg, ops)


@settings(max_examples=200, deadline=None)
@given(cfg=configs(), ops=st.lists(OPS, min_size=10, max_size=80))
def test_cython_and_python_agree(cfg: dict[str, Any], ops: list[tuple[Any, ...]]) -> None:
    cython_trace = run_ops(importlib.import_module(MODULES["cython"]), cfg, ops)
    python_trace = run_ops(importlib.import_module(MODULES["python"]), cfg, ops)
    assert cython_trace == python_trace


def test_wait_stays_exact_after_many_removals(impl: ModuleType) -> None:
    q = make(impl, max_batch_size=1000, delay=100_000)
    for rid in range(600):
        q.push(rid, 1, 0, 0, rid, 50_000 + (rid * 7919) % 600)
    keep = set(range(400, 600, 3))
    for rid in range(600):
        if rid not in keep:
            assert q.remove(rid)
    assert len(q) == len(keep)
    oldest = min(keep)
    nearest = min(50_000 + (rid * 7919) % 600 for rid in keep)
    now = 1_000
    expected = min(100_000 - (now - oldest), nearest - now)
    assert q.plan(now) == (0, expected)
    rejected = q.expire(nearest)
    assert rejected == sorted(r for r in keep if 50_000 + (r * 7919) % 600 == nearest)


def test_environment_variable_forces_python(monkeypatch: pytest.MonkeyPatch) -> None:
    from volley.scheduler import _batchcore as core

    try:
        monkeypatch.setenv("VOLLEY_NO_EXTENSIONS", "1")
        assert importlib.reload(core).IMPLEMENTATION == "python"
        monkeypatch.delenv("VOLLEY_NO_EXTENSIONS")
        assert importlib.reload(core).IMPLEMENTATION == "cython"
    finally:
        monkeypatch.undo()
        importlib.reload(core)
