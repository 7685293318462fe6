"""``QueueSettings``: priority levels, queue deadlines, rows and shape keys."""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import pytest

from volley.model.spec import BatchingSpec, ModelSpec, QueuePolicy, TensorSpec
from volley.scheduler import queue as queue_module
from volley.scheduler.queue import QueueSettings
from volley.scheduler.request import InferRequest

ARRIVAL = 5_000_000_000


def make_spec(batching: BatchingSpec | None, max_batch: int = 8) -> ModelSpec:
    return ModelSpec(
        name="q",
        platform="onnxruntime_onnx",
        backend="onnxruntime",
        max_batch_size=max_batch,
        inputs=(TensorSpec("X", "FP32", (-1,)),),
        outputs=(TensorSpec("Y", "FP32", (-1,)),),
        batching=batching,
    )


def request(
    rows: int = 3, priority: int = 0, timeout_us: int = 0, shape_key: Hashable = ("X", 4)
) -> InferRequest:
    return InferRequest(
        inputs={"X": np.zeros((rows, 4), np.float32)},
        rows=rows,
        shape_key=shape_key,
        priority=priority,
        timeout_us=timeout_us,
        arrival_ns=ARRIVAL,
    )


PRIORITIES = BatchingSpec(
    preferred_batch_sizes=(8,),
    priority_levels=3,
    default_priority_level=2,
    default_queue_policy=QueuePolicy(default_timeout_us=1000),
    priority_queue_policies={
        1: QueuePolicy(default_timeout_us=0),
        3: QueuePolicy(default_timeout_us=5000, allow_timeout_override=True),
    },
)


@pytest.mark.parametrize(
    ("priority", "timeout_us", "level", "expiry"),
    [
        # Level 1: its own policy without a timeout.
        (1, 0, 1, 0),
        (1, 100, 1, 0),
        # Level 2 uses the default policy: 1000 us, no override allowed.
        (2, 0, 2, ARRIVAL + 1_000_000),
        (2, 10, 2, ARRIVAL + 1_000_000),
        # Level 3: 5000 us, a request may ask for less but not for more.
        (3, 0, 3, ARRIVAL + 5_000_000),
        (3, 200, 3, ARRIVAL + 200_000),
        (3, 9000, 3, ARRIVAL + 5_000_000),
        # No priority, or out of range: the default level 2.
        (0, 0, 2, ARRIVAL + 1_000_000),
        (4, 0, 2, ARRIVAL + 1_000_000),
        (99, 50, 2, ARRIVAL + 1_000_000),
    ],
)
def test_level_and_expiry_with_priority_levels(
    priority: int, timeout_us: int, level: int, expiry: int
) -> None:
    settings = QueueSettings(make_spec(PRIORITIES))
    assert settings.level_and_expiry(request(priority=priority, timeout_us=timeout_us)) == (
        level,
        expiry,
    )


@pytest.mark.parametrize(
    ("policy", "timeout_us", "expiry"),
    [
        (QueuePolicy(), 0, 0),
        (QueuePolicy(), 700, 0),
        (QueuePolicy(default_timeout_us=300), 0, ARRIVAL + 300_000),
        (QueuePolicy(default_timeout_us=300, allow_timeout_override=True), 100, ARRIVAL + 100_000),
        (QueuePolicy(default_timeout_us=300, allow_timeout_override=False), 100, ARRIVAL + 300_000),
    ],
)
def test_level_and_expiry_single_queue(policy: QueuePolicy, timeout_us: int, expiry: int) -> None:
    batching = BatchingSpec(preferred_batch_sizes=(8,), default_queue_policy=policy)
    settings = QueueSettings(make_spec(batching))
    for priority in (0, 1, 5):
        assert settings.level_and_expiry(request(priority=priority, timeout_us=timeout_us)) == (
            0,
            expiry,
        )


def test_without_batching() -> None:
    settings = QueueSettings(make_spec(None, max_batch=0))
    req = request(rows=5, priority=3, timeout_us=100)
    assert settings.level_and_expiry(req) == (0, 0)
    assert settings.rows(req) == 1


def test_rows_with_batching() -> None:
    settings = QueueSettings(make_spec(BatchingSpec(preferred_batch_sizes=(8,))))
    assert settings.rows(request(rows=5)) == 5
    assert settings.rows(request(rows=1)) == 1


def test_max_queue_size_is_applied_per_level() -> None:
    batching = BatchingSpec(
        preferred_batch_sizes=(8,),
        max_queue_delay_us=1_000_000,
        priority_levels=2,
        default_priority_level=1,
        default_queue_policy=QueuePolicy(max_queue_size=1),
        priority_queue_policies={2: QueuePolicy(max_queue_size=2)},
    )
    settings = QueueSettings(make_spec(batching))
    q = settings.queue
    assert q.push(1, 1, 1, 0, ARRIVAL, 0)
    assert not q.push(2, 1, 1, 0, ARRIVAL, 0)
    assert q.push(3, 1, 2, 0, ARRIVAL, 0)
    assert q.push(4, 1, 2, 0, ARRIVAL, 0)
    assert not q.push(5, 1, 2, 0, ARRIVAL, 0)
    assert len(q) == 3


def test_shape_key_same_shape_same_key() -> None:
    settings = QueueSettings(make_spec(BatchingSpec(preferred_batch_sizes=(8,))))
    first = settings.shape_key(request(shape_key=("X", 4)))
    assert settings.shape_key(request(rows=1, shape_key=("X", 4))) == first
    assert settings.shape_key(request(rows=7, shape_key=("X", 4))) == first
    other = settings.shape_key(request(shape_key=("X", 5)))
    names = settings.shape_key(request(shape_key=("Z", 4)))
    assert len({first, other, names}) == 3
    assert settings.shape_key(request(shape_key=("X", 5))) == other


def test_shape_keys_of_different_models_are_independent() -> None:
    spec = make_spec(BatchingSpec(preferred_batch_sizes=(8,)))
    a, b = QueueSettings(spec), QueueSettings(spec)
    assert a.shape_key(request(shape_key=("X", 1))) == 0
    assert b.shape_key(request(shape_key=("X", 2))) == 0


def test_shape_keys_never_reused_after_the_table_is_cleared() -> None:
    limit = queue_module._MAX_SHAPE_KEYS
    settings = QueueSettings(make_spec(BatchingSpec(preferred_batch_sizes=(8,))))
    key_of: dict[tuple[str, int], int] = {}
    last = -1
    # Every shape once, more than the table holds: each new shape gets a larger key.
    for width in range(limit + 50):
        shape = ("X", width)
        key = settings.shape_key(request(shape_key=shape))
        assert key > last
        last = key
        key_of[shape] = key
    assert len(set(key_of.values())) == len(key_of)
    # Shapes seen since the clear keep their key...
    recent = ("X", limit + 10)
    assert settings.shape_key(request(shape_key=recent)) == key_of[recent]
    # ...shapes from before the clear get a new key, never one another shape had.
    for width in (0, 1, limit - 1):
        shape = ("X", width)
        key = settings.shape_key(request(shape_key=shape))
        assert key > last
        assert key != key_of[shape]
        last = key
