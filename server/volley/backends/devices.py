"""Which CUDA devices this process can use."""

from __future__ import annotations

import ctypes
import functools
import logging

log = logging.getLogger("volley.backends")


@functools.cache
def cuda_device_count() -> int:
    """CUDA devices visible through the driver API, or 0 without a driver or GPU.

    Uses ``libcuda.so.1`` (part of every NVIDIA driver install) rather than a framework, so it
    works whichever runtime libraries are installed, and honours ``CUDA_VISIBLE_DEVICES``.
    """
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    log.info("found %d CUDA device(s)", count.value)
    return int(count.value)
