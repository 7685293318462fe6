"""System shared memory regions (Triton's shared-memory extension), transport-free.

A client creates a POSIX shared memory object (``shm_open(key)``: ``/dev/shm/<key>``) and
registers a window of it under a name. Inputs naming a region are read as views of the mapping
(no copy); outputs naming one are written into it. Every access checks the window against the
region and the object's current size, so a client that shrinks its object gets an error, not
a crash.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from volley.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted

#: Where POSIX shared memory objects live.
SHM_ROOT = Path("/dev/shm")
#: Regions registered at once, at most.
MAX_REGIONS = 1024


@dataclass(frozen=True, slots=True)
class RegionStatus:
    """A registered region as ``SystemSharedMemoryStatus`` reports it."""

    name: str
    key: str
    offset: int
    byte_size: int


class _Region:
    __slots__ = ("byte_size", "fd", "key", "map", "name", "offset")

    def __init__(self, name: str, key: str, offset: int, byte_size: int, fd: int) -> None:
        self.name = name
        self.key = key
        self.offset = offset
        self.byte_size = byte_size
        self.fd = fd
        self.map = mmap.mmap(fd, offset + byte_size, mmap.MAP_SHARED)

    def close(self) -> None:
        # a request still holding a view keeps the mapping until its last reference goes
        with contextlib.suppress(BufferError):
            self.map.close()
        os.close(self.fd)


def _check_name(name: str) -> None:
    if not name or "/" in name or "\0" in name:
        raise InvalidArgument(f"invalid shared memory region name '{name}'")


def _object_path(key: str) -> Path:
    bare = key[1:] if key.startswith("/") else key
    if not bare or "/" in bare or "\0" in bare or bare in (".", ".."):
        raise InvalidArgument(
            f"invalid shared memory key '{key}': expected '/name' as given to shm_open"
        )
    return SHM_ROOT / bare


class SharedMemory:
    """The regions registered with one server."""

    def __init__(self, max_regions: int = MAX_REGIONS) -> None:
        self._regions: dict[str, _Region] = {}
        self._max = max_regions

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Map ``byte_size`` bytes at ``offset`` of the object ``key`` as region ``name``."""
        _check_name(name)
        path = _object_path(key)
        if name in self._regions:
            raise AlreadyExists(f"shared memory region '{name}' is already registered")
        if len(self._regions) >= self._max:
            raise ResourceExhausted(
                f"{self._max} shared memory regions are registered; unregister some first"
            )
        if offset < 0 or byte_size <= 0:
            raise InvalidArgument(
                f"shared memory region '{name}': offset must be >= 0 and byte_size > 0, got "
                f"offset {offset} and byte_size {byte_size}"
            )
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise InvalidArgument(
                f"unable to open shared memory region '{name}' (key '{key}'): {exc.strerror}"
            ) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise InvalidArgument(f"shared memory key '{key}' is not a shared memory object")
            if info.st_size < offset + byte_size:
                raise InvalidArgument(
                    f"shared memory region '{name}': offset {offset} + byte_size {byte_size} "
                    f"exceeds the {info.st_size} bytes of '{key}'"
                )
            region = _Region(name, key, offset, byte_size, fd)
        except BaseException:
            os.close(fd)
            raise
        self._regions[name] = region

    def status(self, name: str = "") -> list[RegionStatus]:
        """Every region, or the one named."""
        if name:
            region = self._regions.get(name)
            if region is None:
                raise NotFound(f"Unable to find system shared memory region: '{name}'")
            regions = [region]
        else:
            regions = list(self._regions.values())
        return [RegionStatus(r.name, r.key, r.offset, r.byte_size) for r in regions]

    def unregister(self, name: str = "") -> None:
        """Release the region named (every region when ``name`` is empty); unknown: no-op."""
        names = [name] if name else list(self._regions)
        for n in names:
            region = self._regions.pop(n, None)
            if region is not None:
                region.close()

    def close(self) -> None:
        """Release every region."""
        self.unregister()

    def window(self, name: str, offset: int, byte_size: int, what: str) -> memoryview:
        """``byte_size`` bytes at ``offset`` in region ``name``, as a writable view.

        ``what`` names the tensor in errors.
        """
        region = self._regions.get(name)
        if region is None:
            raise InvalidArgument(f"{what}: unable to find shared memory region '{name}'")
        if offset < 0 or byte_size < 0 or offset + byte_size > region.byte_size:
            raise InvalidArgument(
                f"{what}: shared memory offset {offset} + byte_size {byte_size} is outside "
                f"region '{name}' ({region.byte_size} bytes)"
            )
        start = region.offset + offset
        if os.fstat(region.fd).st_size < start + byte_size:
            raise InvalidArgument(
                f"{what}: shared memory object '{region.key}' was truncated below the region"
            )
        return memoryview(region.map)[start : start + byte_size]
