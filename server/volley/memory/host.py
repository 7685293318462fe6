"""The process's resident memory, and returning freed heap to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util
import os


def rss_bytes() -> int:
    """Resident set size of this process (0 where ``/proc`` is not available)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def trim() -> None:
    """Give the heap's free pages back to the OS (glibc ``malloc_trim``).

    After a model is unloaded its sessions' memory is free but glibc keeps it in its arenas,
    so the process's RSS would only grow across load/unload cycles. A no-op elsewhere.
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
