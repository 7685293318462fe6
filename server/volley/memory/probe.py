"""How much memory a device has in use: the host's resident set, or a GPU's used memory.

A load's footprint is ``used`` after minus before. The GPU probe asks the CUDA driver
(``cuMemGetInfo`` in the device's primary context, through ``libcuda.so.1``); tests pass a
fake probe with the same interface.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Protocol

from volley.memory import host


class DeviceProbe(Protocol):
    """Reads one kind of device's memory in use."""

    def used_bytes(self, device: str) -> int:
        """Bytes in use on ``device`` (``cpu``: this process; ``gpuN``: the whole GPU)."""
        ...

    def settle(self, device: str) -> None:
        """Return freed memory to the device before a reading (e.g. trim the heap)."""
        ...


class HostProbe:
    """The process's resident set; freed heap is handed back to the OS before a reading."""

    def used_bytes(self, device: str) -> int:
        return host.rss_bytes()

    def settle(self, device: str) -> None:
        host.trim()


class CudaProbe:
    """A GPU's used memory (total minus free) through the CUDA driver API."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cuda: ctypes.CDLL | None = None
        self._contexts: dict[int, ctypes.c_void_p] = {}

    def _driver(self) -> ctypes.CDLL:
        if self._cuda is None:
            cuda = ctypes.CDLL("libcuda.so.1")
            if cuda.cuInit(0) != 0:
                raise OSError("cuInit failed")
            self._cuda = cuda
        return self._cuda

    def used_bytes(self, device: str) -> int:
        index = int(device.removeprefix("gpu"))
        with self._lock:
            cuda = self._driver()
            ctx = self._contexts.get(index)
            if ctx is None:
                dev = ctypes.c_int()
                ctx = ctypes.c_void_p()
                if cuda.cuDeviceGet(ctypes.byref(dev), index) != 0:
                    raise OSError(f"no CUDA device {index}")
                if cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev) != 0:
                    raise OSError(f"cannot open CUDA device {index}")
                self._contexts[index] = ctx
            cuda.cuCtxPushCurrent(ctx)
            try:
                free, total = ctypes.c_size_t(), ctypes.c_size_t()
                if cuda.cuMemGetInfo(ctypes.byref(free), ctypes.byref(total)) != 0:
                    raise OSError(f"cuMemGetInfo failed on CUDA device {index}")
            finally:
                cuda.cuCtxPopCurrent(ctypes.byref(ctypes.c_void_p()))
            return int(total.value - free.value)

    def settle(self, device: str) -> None:
        return None


class Probes:
    """The probe of each device kind."""

    def __init__(self, host_probe: DeviceProbe | None = None, gpu: DeviceProbe | None = None):
        self._host = host_probe or HostProbe()
        self._gpu = gpu or CudaProbe()

    def for_device(self, device: str) -> DeviceProbe:
        """The probe that measures ``device``."""
        return self._host if device == "cpu" else self._gpu
