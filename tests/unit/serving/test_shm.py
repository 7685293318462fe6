"""System shared memory regions: registration checks, bounds, truncation, release."""

from __future__ import annotations

import os
from collections.abc import Iterator
from multiprocessing import shared_memory

import numpy as np
import pytest

from volley.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted
from volley.serving.shm import RegionStatus, SharedMemory


@pytest.fixture
def block() -> Iterator[shared_memory.SharedMemory]:
    mem = shared_memory.SharedMemory(create=True, size=4096)
    yield mem
    mem.close()
    mem.unlink()


def key(mem: shared_memory.SharedMemory) -> str:
    return "/" + mem.name.lstrip("/")


def test_register_status_unregister(block: shared_memory.SharedMemory) -> None:
    regions = SharedMemory()
    regions.register("a", key(block), 0, 1024)
    regions.register("b", key(block), 1024, 2048)
    assert regions.status() == [
        RegionStatus("a", key(block), 0, 1024),
        RegionStatus("b", key(block), 1024, 2048),
    ]
    assert regions.status("b") == [RegionStatus("b", key(block), 1024, 2048)]
    with pytest.raises(NotFound, match="'c'"):
        regions.status("c")
    regions.unregister("a")
    regions.unregister("a")  # unknown: nothing to do
    assert [r.name for r in regions.status()] == ["b"]
    regions.unregister()
    assert regions.status() == []


def test_windows_read_and_write_the_object(block: shared_memory.SharedMemory) -> None:
    regions = SharedMemory()
    regions.register("r", key(block), 512, 1024)
    data = np.arange(16, dtype=np.float32)
    block.buf[512 + 64 : 512 + 128] = data.tobytes()
    view = regions.window("r", 64, 64, "input 'X'")
    np.testing.assert_array_equal(np.frombuffer(view, np.float32), data)
    regions.window("r", 0, 4, "output 'Y'")[:] = b"\x01\x02\x03\x04"
    assert bytes(block.buf[512:516]) == b"\x01\x02\x03\x04"
    del view
    regions.close()


@pytest.mark.parametrize(("offset", "size"), [(1000, 100), (-1, 4), (0, 1025), (1024, 1)])
def test_windows_outside_the_region_are_refused(
    block: shared_memory.SharedMemory, offset: int, size: int
) -> None:
    regions = SharedMemory()
    regions.register("r", key(block), 0, 1024)
    with pytest.raises(InvalidArgument, match="outside region 'r'"):
        regions.window("r", offset, size, "input 'X'")
    with pytest.raises(InvalidArgument, match="unable to find shared memory region 'q'"):
        regions.window("q", 0, 4, "input 'X'")
    regions.close()


def test_a_truncated_object_is_an_error_not_a_crash(block: shared_memory.SharedMemory) -> None:
    regions = SharedMemory()
    regions.register("r", key(block), 0, 4096)
    os.truncate(f"/dev/shm/{block.name.lstrip('/')}", 1024)
    assert regions.window("r", 0, 1024, "input 'X'").nbytes == 1024
    with pytest.raises(InvalidArgument, match="truncated"):
        regions.window("r", 1024, 8, "input 'X'")
    regions.close()


@pytest.mark.parametrize(
    ("name", "key_", "offset", "size", "error"),
    [
        ("a/b", None, 0, 8, InvalidArgument),
        ("", None, 0, 8, InvalidArgument),
        ("r", "/../etc/passwd", 0, 8, InvalidArgument),
        ("r", "/a/b", 0, 8, InvalidArgument),
        ("r", "/", 0, 8, InvalidArgument),
        ("r", "/volley_no_such_object", 0, 8, InvalidArgument),
        ("r", None, 0, 8192, InvalidArgument),
        ("r", None, 4096, 1, InvalidArgument),
        ("r", None, -1, 8, InvalidArgument),
        ("r", None, 0, 0, InvalidArgument),
    ],
)
def test_bad_registrations(
    block: shared_memory.SharedMemory,
    name: str,
    key_: str | None,
    offset: int,
    size: int,
    error: type[Exception],
) -> None:
    regions = SharedMemory()
    with pytest.raises(error):
        regions.register(name, key_ or key(block), offset, size)
    assert regions.status() == []


def test_duplicates_and_the_region_limit(block: shared_memory.SharedMemory) -> None:
    regions = SharedMemory(max_regions=2)
    regions.register("a", key(block), 0, 8)
    with pytest.raises(AlreadyExists):
        regions.register("a", key(block), 0, 8)
    regions.register("b", key(block), 0, 8)
    with pytest.raises(ResourceExhausted):
        regions.register("c", key(block), 0, 8)
    regions.close()


def test_unregister_while_a_view_is_held(block: shared_memory.SharedMemory) -> None:
    regions = SharedMemory()
    regions.register("r", key(block), 0, 64)
    view = np.frombuffer(regions.window("r", 0, 64, "input 'X'"), np.uint8)
    regions.unregister("r")
    assert view.sum() >= 0  # still readable: the mapping lives while the view does
    del view
