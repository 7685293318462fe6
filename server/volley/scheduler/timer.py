"""A loop timer with microsecond resolution that never spins.

uvloop (libuv) timers have millisecond granularity: a 300 µs ``call_at`` fires on the next loop
iteration, and a batcher that re-arms it until the queue delay has passed burns a core while
it waits. On Linux this timer is a ``timerfd`` armed at an absolute ``CLOCK_MONOTONIC`` time
(the clock of ``time.monotonic_ns``) and watched by the loop like any socket, so a wait of any
length costs one wake-up. Elsewhere it falls back to ``call_at`` rounded *up* to the next whole
millisecond: a delay is then honoured late by under 1 ms rather than early by spinning.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import math
import os
import sys
import time
from collections.abc import Callable

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.c_void_p,
        ]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


class LoopTimer:
    """Calls ``callback`` on ``loop`` once at the deadline given to ``arm`` (monotonic ns)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
        self._loop = loop
        self._callback = callback
        self._fd = -1
        self._handle: asyncio.TimerHandle | None = None
        self._spec = _Itimerspec()
        if _LIBC is not None:
            fd = _LIBC.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
            if fd >= 0:
                self._fd = fd
                loop.add_reader(fd, self._fire)

    @property
    def precise(self) -> bool:
        """True when backed by a timerfd (µs resolution)."""
        return self._fd >= 0

    def arm(self, deadline_ns: int) -> None:
        """Fire at ``deadline_ns`` (``time.monotonic_ns`` clock), replacing any earlier arm."""
        if self._fd >= 0:
            value = self._spec.it_value
            value.tv_sec, value.tv_nsec = divmod(max(deadline_ns, 1), 1_000_000_000)
            assert _LIBC is not None
            _LIBC.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None)
            return
        self.disarm()
        delay_s = math.ceil(max(deadline_ns - time.monotonic_ns(), 0) / 1e6) / 1e3
        self._handle = self._loop.call_later(delay_s, self._callback)

    def disarm(self) -> None:
        """Cancel a pending fire (a no-op when nothing is armed)."""
        if self._fd >= 0:
            value = self._spec.it_value
            value.tv_sec = value.tv_nsec = 0
            assert _LIBC is not None
            _LIBC.timerfd_settime(self._fd, 0, ctypes.byref(self._spec), None)
        elif self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return
        self._callback()

    def close(self) -> None:
        """Release the timer; it never fires after this."""
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        elif self._handle is not None:
            self._handle.cancel()
            self._handle = None
