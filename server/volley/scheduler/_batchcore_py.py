"""Pure-Python twin of the Cython batching core ``volley.scheduler._batchcore_c``.

Both implementations behave identically; :mod:`volley.scheduler._batchcore` picks one. The core only
decides and moves bytes: request ids, row counts and nanosecond timestamps go in, request ids and
wait times come out.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["BatchQueue", "gather", "split_rows"]

# Lazily deleted heap entries are purged once they outnumber the live ones by this much.
_COMPACT_MIN = 64


class _Req:
    __slots__ = (
        "arrival",
        "delayed",
        "expiring",
        "key",
        "level",
        "queued",
        "rid",
        "rows",
        "seq",
    )

    def __init__(
        self, rid: int, rows: int, level: int, key: int, arrival: int, expiring: bool, seq: int
    ) -> None:
        self.rid = rid
        self.rows = rows
        self.level = level
        self.key = key
        self.arrival = arrival
        self.seq = seq
        self.expiring = expiring
        self.delayed = False
        self.queued = True


class _Level:
    __slots__ = ("delayed", "main")

    def __init__(self) -> None:
        self.main: OrderedDict[int, _Req] = OrderedDict()
        self.delayed: OrderedDict[int, _Req] = OrderedDict()


class BatchQueue:
    """Per-priority FIFO queues of requests and Triton's dynamic-batch formation over them.

    Batch order walks level 1 first (or the single level 0), FIFO inside a level, with requests
    delayed by a queue timeout at the end of their level.
    """

    def __init__(
        self,
        max_batch_size: int,
        preferred_batch_sizes: Sequence[int],
        max_queue_delay_ns: int,
        priority_levels: int,
        max_queue_sizes: Sequence[int],
        delay_on_timeout: Sequence[bool],
    ) -> None:
        """Create an empty queue; raises ValueError on an inconsistent configuration."""
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_queue_delay_ns < 0:
            raise ValueError("max_queue_delay_ns must be >= 0")
        if priority_levels < 0:
            raise ValueError("priority_levels must be >= 0")
        nlevels = max(priority_levels, 1)
        if len(max_queue_sizes) != nlevels or len(delay_on_timeout) != nlevels:
            raise ValueError("max_queue_sizes and delay_on_timeout need one entry per level")
        for size in preferred_batch_sizes:
            if not 1 <= size <= max_batch_size:
                raise ValueError("preferred batch sizes must be in [1, max_batch_size]")
        for size in max_queue_sizes:
            if size < 0:
                raise ValueError("max_queue_sizes must be >= 0")
        self._max_batch_size = int(max_batch_size)
        self._pmax = int(max(preferred_batch_sizes, default=max_batch_size))
        self._delay = int(max_queue_delay_ns)
        self._priority_levels = int(priority_levels)
        self._max_queue = [int(size) for size in max_queue_sizes]
        self._delay_on_timeout = [bool(flag) for flag in delay_on_timeout]
        self._levels = [_Level() for _ in range(nlevels)]
        self._reqs: dict[int, _Req] = {}
        self._rows = 0
        self._seq = 0
        self._arrivals: list[tuple[int, int, _Req]] = []
        self._arrivals_dead = 0
        self._expiries: list[tuple[int, int, _Req]] = []
        self._expiries_dead = 0

    def _index(self, level: int) -> int:
        index = level - 1 if self._priority_levels else level
        if not 0 <= index < len(self._levels):
            raise ValueError(f"priority level {level} out of range")
        return index

    def push(
        self, rid: int, rows: int, level: int, shape_key: int, now_ns: int, expire_ns: int
    ) -> bool:
        """Enqueue a request; False (nothing enqueued) when its level's queue is full."""
        if not 1 <= rows <= self._max_batch_size:
            raise ValueError("rows must be in [1, max_batch_size]")
        index = self._index(level)
        if rid in self._reqs:
            raise ValueError(f"request id {rid} is already queued")
        limit = self._max_queue[index]
        lv = self._levels[index]
        if limit and len(lv.main) + len(lv.delayed) >= limit:
            return False
        seq = self._seq
        self._seq = seq + 1
        req = _Req(rid, rows, index, shape_key, now_ns, expire_ns != 0, seq)
        lv.main[rid] = req
        self._reqs[rid] = req
        self._rows += rows
        heapq.heappush(self._arrivals, (now_ns, seq, req))
        if expire_ns:
            heapq.heappush(self._expiries, (expire_ns, seq, req))
        return True

    def _order(self) -> Iterator[_Req]:
        for lv in self._levels:
            yield from lv.main.values()
            yield from lv.delayed.values()

    def plan(self, now_ns: int) -> tuple[int, int]:
        """Return ``(n, 0)`` to send the first n requests now, ``(0, wait_ns)`` or ``(0, -1)``.

        Call :meth:`expire` with the same clock first; a timeout already due yields a 1 ns wait.
        """
        if not self._reqs:
            return (0, -1)
        max_rows = self._max_batch_size
        pmax = self._pmax
        n = 0
        rows = 0
        key = 0
        blocked = False
        for req in self._order():
            if n == 0:
                key = req.key
            elif req.key != key:
                blocked = True
                break
            if rows + req.rows > max_rows:
                blocked = True
                break
            rows += req.rows
            n += 1
            if rows in (pmax, max_rows):
                break
        if blocked or rows >= pmax or self._delay == 0:
            return (n, 0)
        wait = self._delay - (now_ns - self._oldest_arrival())
        if wait <= 0:
            return (n, 0)
        expiries = self._expiries
        while expiries and not expiries[0][2].queued:
            heapq.heappop(expiries)
            self._expiries_dead -= 1
        if expiries:
            wait = min(wait, expiries[0][0] - now_ns)
        return (0, max(wait, 1))

    def next_expiry_ns(self) -> int:
        """Earliest pending queue-timeout deadline in ns, or 0 when none is pending."""
        expiries = self._expiries
        while expiries and not expiries[0][2].queued:
            heapq.heappop(expiries)
            self._expiries_dead -= 1
        return expiries[0][0] if expiries else 0

    def _oldest_arrival(self) -> int:
        arrivals = self._arrivals
        while not arrivals[0][2].queued:
            heapq.heappop(arrivals)
            self._arrivals_dead -= 1
        return arrivals[0][0]

    def pop(self, n: int) -> list[int]:
        """Remove and return the ids of the first n requests in batch order."""
        if not 0 <= n <= len(self._reqs):
            raise ValueError("n out of range")
        out: list[int] = []
        for lv in self._levels:
            for part in (lv.main, lv.delayed):
                while part and len(out) < n:
                    _, req = part.popitem(last=False)
                    self._forget(req)
                    out.append(req.rid)
            if len(out) == n:
                break
        return out

    def _forget(self, req: _Req) -> None:
        if req.expiring:
            self._expiries_dead += 1
        req.queued = False
        del self._reqs[req.rid]
        self._rows -= req.rows
        self._arrivals_dead += 1
        if self._arrivals_dead > _COMPACT_MIN and self._arrivals_dead > len(self._reqs):
            self._arrivals = [e for e in self._arrivals if e[2].queued]
            heapq.heapify(self._arrivals)
            self._arrivals_dead = 0
        if self._expiries_dead > _COMPACT_MIN and self._expiries_dead > len(self._reqs):
            self._expiries = [e for e in self._expiries if e[2].queued]
            heapq.heapify(self._expiries)
            self._expiries_dead = 0

    def expire(self, now_ns: int) -> list[int]:
        """Apply queue timeouts due at now_ns; return the rejected ids, oldest first."""
        expiries = self._expiries
        due: list[_Req] = []
        while expiries and expiries[0][0] <= now_ns:
            req = heapq.heappop(expiries)[2]
            if req.queued:
                req.expiring = False
                due.append(req)
            else:
                self._expiries_dead -= 1
        due.sort(key=lambda r: r.seq)
        out: list[int] = []
        for req in due:
            lv = self._levels[req.level]
            del lv.main[req.rid]
            if self._delay_on_timeout[req.level]:
                req.delayed = True
                lv.delayed[req.rid] = req
            else:
                self._forget(req)
                out.append(req.rid)
        return out

    def remove(self, rid: int) -> bool:
        """Remove a queued request (cancellation); False if it is not queued."""
        req = self._reqs.get(rid)
        if req is None:
            return False
        lv = self._levels[req.level]
        del (lv.delayed if req.delayed else lv.main)[rid]
        self._forget(req)
        return True

    def __len__(self) -> int:
        """Number of queued requests."""
        return len(self._reqs)

    @property
    def queued_rows(self) -> int:
        """Sum of the rows of all queued requests."""
        return self._rows

    def level_size(self, level: int) -> int:
        """Number of requests queued at ``level`` (0 for the single queue, else 1..levels)."""
        lv = self._levels[self._index(level)]
        return len(lv.main) + len(lv.delayed)


def gather(srcs: Sequence[Buffer], dst: Buffer) -> int:
    """Copy each C-contiguous source buffer back to back into ``dst``; return bytes written.

    Raises ValueError if a buffer is not C-contiguous, ``dst`` is read-only or too small; nothing
    is written in that case.
    """
    out = memoryview(dst)
    if out.readonly:
        raise ValueError("gather: destination buffer is read-only")
    if not out.c_contiguous:
        raise ValueError("gather: destination buffer is not C-contiguous")
    views: list[memoryview] = []
    total = 0
    for src in srcs:
        view = memoryview(src)
        if not view.c_contiguous:
            raise ValueError("gather: source buffer is not C-contiguous")
        views.append(view)
        total += view.nbytes
    if total > out.nbytes:
        raise ValueError(f"gather: destination holds {out.nbytes} bytes, sources need {total}")
    if not total:
        return 0
    raw = out.cast("B")
    offset = 0
    for view in views:
        size = view.nbytes
        if size:
            raw[offset : offset + size] = view.cast("B")
            offset += size
    return total


def split_rows(array: np.ndarray, rows: Sequence[int]) -> list[np.ndarray]:
    """Views of consecutive row ranges of ``array`` along axis 0, ``rows[i]`` rows each.

    Raises ValueError if a count is negative, ``array`` is 0-d or the counts do not sum to its
    first dimension.
    """
    if array.ndim == 0:
        raise ValueError("split_rows: array has no batch dimension")
    out: list[np.ndarray] = []
    start = 0
    for count in rows:
        if count < 0:
            raise ValueError("split_rows: row counts must be >= 0")
        out.append(array[start : start + count])
        start += count
    if start != array.shape[0]:
        raise ValueError(f"split_rows: counts sum to {start}, array has {array.shape[0]} rows")
    return out
