# cython: language_level=3, boundscheck=False, wraparound=False, embedsignature=True
"""Dynamic batching core (Cython): queue bookkeeping and byte moves.

Behaves exactly like the pure-Python twin ``volley.scheduler._batchcore_py``. Requests live in a slab
of C structs linked into one list per priority level (delayed requests at the tail, from
``dfirst`` on), one list sorted by arrival, and an indexed min-heap of pending timeouts.
"""

from cpython.buffer cimport (
    PyBUF_STRIDES,
    PyBuffer_IsContiguous,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.stdlib cimport qsort
from libc.string cimport memcpy, memset

__all__ = ["BatchQueue", "gather", "split_rows"]


cdef struct Node:
    long long rid
    long long key
    long long arrival
    long long expire
    long long seq
    long long rows
    int level
    int prev
    int next
    int aprev
    int anext
    int hpos


cdef struct Due:
    long long seq
    int slot


cdef int _by_seq(const void* a, const void* b) noexcept nogil:
    cdef long long x = (<const Due*>a).seq
    cdef long long y = (<const Due*>b).seq
    return (x > y) - (x < y)


cdef class BatchQueue:
    """Per-priority FIFO queues of requests and Triton's dynamic-batch formation over them."""

    cdef Node* nodes
    cdef int* heap
    cdef int* head
    cdef int* tail
    cdef int* dfirst
    cdef int* count
    cdef long long* maxq
    cdef char* delay_on_timeout
    cdef int cap
    cdef int free
    cdef int hsize
    cdef int ahead
    cdef int atail
    cdef int nlevels
    cdef int offset
    cdef int total
    cdef long long rows
    cdef long long seq
    cdef long long max_rows
    cdef long long pmax
    cdef long long delay
    cdef dict slots

    def __cinit__(self):
        self.free = -1
        self.ahead = -1
        self.atail = -1
        self.slots = {}

    def __dealloc__(self):
        PyMem_Free(self.nodes)
        PyMem_Free(self.heap)
        PyMem_Free(self.head)
        PyMem_Free(self.maxq)
        PyMem_Free(self.delay_on_timeout)

    def __init__(self, long long max_batch_size, preferred_batch_sizes,
                 long long max_queue_delay_ns, long long priority_levels, max_queue_sizes,
                 delay_on_timeout):
        """Create an empty queue; raises ValueError on an inconsistent configuration."""
        cdef Py_ssize_t i
        if self.head != NULL:
            raise RuntimeError("BatchQueue is already initialised")
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_queue_delay_ns < 0:
            raise ValueError("max_queue_delay_ns must be >= 0")
        if priority_levels < 0:
            raise ValueError("priority_levels must be >= 0")
        cdef Py_ssize_t nlevels = priority_levels if priority_levels > 0 else 1
        if len(max_queue_sizes) != nlevels or len(delay_on_timeout) != nlevels:
            raise ValueError("max_queue_sizes and delay_on_timeout need one entry per level")
        for size in preferred_batch_sizes:
            if not 1 <= size <= max_batch_size:
                raise ValueError("preferred batch sizes must be in [1, max_batch_size]")
        for size in max_queue_sizes:
            if size < 0:
                raise ValueError("max_queue_sizes must be >= 0")
        self.max_rows = max_batch_size
        self.pmax = max(preferred_batch_sizes, default=max_batch_size)
        self.delay = max_queue_delay_ns
        self.offset = 1 if priority_levels else 0
        self.nlevels = nlevels
        self.head = <int*>PyMem_Malloc(4 * nlevels * sizeof(int))
        self.maxq = <long long*>PyMem_Malloc(nlevels * sizeof(long long))
        self.delay_on_timeout = <char*>PyMem_Malloc(nlevels)
        if self.head == NULL or self.maxq == NULL or self.delay_on_timeout == NULL:
            raise MemoryError()
        self.tail = self.head + nlevels
        self.dfirst = self.tail + nlevels
        self.count = self.dfirst + nlevels
        for i in range(nlevels):
            self.head[i] = self.tail[i] = self.dfirst[i] = -1
            self.count[i] = 0
            self.maxq[i] = max_queue_sizes[i]
            self.delay_on_timeout[i] = 1 if delay_on_timeout[i] else 0

    cdef int _index(self, long long level) except -1:
        cdef long long index = level - self.offset
        if index < 0 or index >= self.nlevels:
            raise ValueError(f"priority level {level} out of range")
        return <int>index

    cdef int _grow(self) except -1:
        cdef int cap = self.cap * 2 if self.cap else 64
        cdef int i
        cdef Node* nodes = <Node*>PyMem_Realloc(self.nodes, cap * sizeof(Node))
        if nodes == NULL:
            raise MemoryError()
        self.nodes = nodes
        cdef int* heap = <int*>PyMem_Realloc(self.heap, cap * sizeof(int))
        if heap == NULL:
            raise MemoryError()
        self.heap = heap
        memset(&nodes[self.cap], 0, (cap - self.cap) * sizeof(Node))
        for i in range(self.cap, cap - 1):
            nodes[i].next = i + 1
        nodes[cap - 1].next = self.free
        self.free = self.cap
        self.cap = cap
        return 0

    cdef inline bint _hless(self, int a, int b) noexcept:
        cdef Node* x = &self.nodes[a]
        cdef Node* y = &self.nodes[b]
        return x.expire < y.expire or (x.expire == y.expire and x.seq < y.seq)

    cdef inline void _hput(self, int i, int slot) noexcept:
        self.heap[i] = slot
        self.nodes[slot].hpos = i

    cdef void _hup(self, int i) noexcept:
        cdef int slot = self.heap[i]
        cdef int parent
        while i > 0:
            parent = (i - 1) >> 1
            if not self._hless(slot, self.heap[parent]):
                break
            self._hput(i, self.heap[parent])
            i = parent
        self._hput(i, slot)

    cdef void _hdown(self, int i) noexcept:
        cdef int slot = self.heap[i]
        cdef int child
        while True:
            child = 2 * i + 1
            if child >= self.hsize:
                break
            if child + 1 < self.hsize and self._hless(self.heap[child + 1], self.heap[child]):
                child += 1
            if not self._hless(self.heap[child], slot):
                break
            self._hput(i, self.heap[child])
            i = child
        self._hput(i, slot)

    cdef void _hremove(self, int slot) noexcept:
        cdef int i = self.nodes[slot].hpos
        cdef int last
        self.nodes[slot].hpos = -1
        self.hsize -= 1
        if i == self.hsize:
            return
        last = self.heap[self.hsize]
        self._hput(i, last)
        self._hup(i)
        self._hdown(self.nodes[last].hpos)

    cdef void _append(self, int slot) noexcept:
        cdef Node* node = &self.nodes[slot]
        cdef int lv = node.level
        node.next = -1
        node.prev = self.tail[lv]
        if node.prev == -1:
            self.head[lv] = slot
        else:
            self.nodes[node.prev].next = slot
        self.tail[lv] = slot

    cdef void _unlink(self, int slot) noexcept:
        cdef Node* node = &self.nodes[slot]
        cdef int lv = node.level
        if self.dfirst[lv] == slot:
            self.dfirst[lv] = node.next
        if node.prev == -1:
            self.head[lv] = node.next
        else:
            self.nodes[node.prev].next = node.next
        if node.next == -1:
            self.tail[lv] = node.prev
        else:
            self.nodes[node.next].prev = node.prev

    cdef int _drop(self, int slot) except -1:
        cdef Node* node = &self.nodes[slot]
        self._unlink(slot)
        if node.aprev == -1:
            self.ahead = node.anext
        else:
            self.nodes[node.aprev].anext = node.anext
        if node.anext == -1:
            self.atail = node.aprev
        else:
            self.nodes[node.anext].aprev = node.aprev
        if node.hpos >= 0:
            self._hremove(slot)
        del self.slots[node.rid]
        self.count[node.level] -= 1
        self.total -= 1
        self.rows -= node.rows
        node.next = self.free
        self.free = slot
        return 0

    cdef inline int _next(self, int slot) noexcept:
        cdef int nxt = self.nodes[slot].next
        cdef int lv = self.nodes[slot].level + 1
        while nxt == -1 and lv < self.nlevels:
            nxt = self.head[lv]
            lv += 1
        return nxt

    cdef inline int _first(self) noexcept:
        cdef int lv
        for lv in range(self.nlevels):
            if self.head[lv] != -1:
                return self.head[lv]
        return -1

    def push(self, long long rid, long long rows, long long level, long long shape_key,
             long long now_ns, long long expire_ns):
        """Enqueue a request; False (nothing enqueued) when its level's queue is full."""
        cdef int lv, slot, d, p
        cdef Node* node
        if rows < 1 or rows > self.max_rows:
            raise ValueError("rows must be in [1, max_batch_size]")
        lv = self._index(level)
        if rid in self.slots:
            raise ValueError(f"request id {rid} is already queued")
        if self.maxq[lv] and self.count[lv] >= self.maxq[lv]:
            return False
        if self.free == -1:
            self._grow()
        slot = self.free
        self.slots[rid] = slot
        node = &self.nodes[slot]
        self.free = node.next
        node.rid = rid
        node.key = shape_key
        node.arrival = now_ns
        node.expire = expire_ns
        node.seq = self.seq
        node.rows = rows
        node.level = lv
        node.hpos = -1
        self.seq += 1
        d = self.dfirst[lv]
        if d == -1:
            self._append(slot)
        else:
            node.next = d
            node.prev = self.nodes[d].prev
            self.nodes[d].prev = slot
            if node.prev == -1:
                self.head[lv] = slot
            else:
                self.nodes[node.prev].next = slot
        p = self.atail
        while p != -1 and self.nodes[p].arrival > now_ns:
            p = self.nodes[p].aprev
        node.aprev = p
        if p == -1:
            node.anext = self.ahead
            self.ahead = slot
        else:
            node.anext = self.nodes[p].anext
            self.nodes[p].anext = slot
        if node.anext == -1:
            self.atail = slot
        else:
            self.nodes[node.anext].aprev = slot
        if expire_ns != 0:
            self.hsize += 1
            self._hput(self.hsize - 1, slot)
            self._hup(self.hsize - 1)
        self.count[lv] += 1
        self.total += 1
        self.rows += rows
        return True

    def plan(self, long long now_ns):
        """Return ``(n, 0)`` to send the first n requests now, ``(0, wait_ns)`` or ``(0, -1)``.

        Call :meth:`expire` with the same clock first; a timeout already due yields a 1 ns wait.
        """
        cdef int cur, n = 0
        cdef long long rows = 0, key, wait, due
        cdef bint blocked = False
        cdef Node* node
        if self.total == 0:
            return (0, -1)
        cur = self._first()
        key = self.nodes[cur].key
        while cur != -1:
            node = &self.nodes[cur]
            if node.key != key or rows + node.rows > self.max_rows:
                blocked = True
                break
            rows += node.rows
            n += 1
            if rows == self.pmax or rows == self.max_rows:
                break
            cur = self._next(cur)
        if blocked or rows >= self.pmax or self.delay == 0:
            return (n, 0)
        wait = self.delay - (now_ns - self.nodes[self.ahead].arrival)
        if wait <= 0:
            return (n, 0)
        if self.hsize:
            due = self.nodes[self.heap[0]].expire - now_ns
            if due < wait:
                wait = due
        return (0, wait if wait > 1 else 1)

    def next_expiry_ns(self):
        """Earliest pending queue-timeout deadline in ns, or 0 when none is pending."""
        if self.hsize == 0:
            return 0
        return self.nodes[self.heap[0]].expire

    def pop(self, Py_ssize_t n):
        """Remove and return the ids of the first n requests in batch order."""
        cdef int cur, nxt
        cdef Py_ssize_t i
        cdef list out = []
        if n < 0 or n > self.total:
            raise ValueError("n out of range")
        cur = self._first()
        for i in range(n):
            nxt = self._next(cur)
            out.append(self.nodes[cur].rid)
            self._drop(cur)
            cur = nxt
        return out

    def expire(self, long long now_ns):
        """Apply queue timeouts due at now_ns; return the rejected ids, oldest first."""
        cdef int cnt = 0, i, slot, lv
        cdef Due* due
        cdef list out = []
        if self.hsize == 0 or self.nodes[self.heap[0]].expire > now_ns:
            return out
        due = <Due*>PyMem_Malloc(self.hsize * sizeof(Due))
        if due == NULL:
            raise MemoryError()
        try:
            while self.hsize and self.nodes[self.heap[0]].expire <= now_ns:
                slot = self.heap[0]
                self._hremove(slot)
                due[cnt].seq = self.nodes[slot].seq
                due[cnt].slot = slot
                cnt += 1
            qsort(due, cnt, sizeof(Due), _by_seq)
            for i in range(cnt):
                slot = due[i].slot
                lv = self.nodes[slot].level
                if self.delay_on_timeout[lv]:
                    self._unlink(slot)
                    self._append(slot)
                    if self.dfirst[lv] == -1:
                        self.dfirst[lv] = slot
                else:
                    out.append(self.nodes[slot].rid)
                    self._drop(slot)
        finally:
            PyMem_Free(due)
        return out

    def remove(self, long long rid):
        """Remove a queued request (cancellation); False if it is not queued."""
        slot = self.slots.get(rid)
        if slot is None:
            return False
        self._drop(slot)
        return True

    def __len__(self):
        """Number of queued requests."""
        return self.total

    @property
    def queued_rows(self):
        """Sum of the rows of all queued requests."""
        return self.rows

    def level_size(self, long long level):
        """Number of requests queued at ``level`` (0 for the single queue, else 1..levels)."""
        return self.count[self._index(level)]


def gather(srcs, dst):
    """Copy each C-contiguous source buffer back to back into ``dst``; return bytes written.

    Raises ValueError if a buffer is not C-contiguous, ``dst`` is read-only or too small; nothing
    is written in that case. The copies run without the GIL.
    """
    cdef Py_buffer out
    cdef Py_buffer* views
    cdef Py_ssize_t n = len(srcs), got = 0, i, total = 0, offset = 0
    cdef char* base
    PyObject_GetBuffer(dst, &out, PyBUF_STRIDES)
    views = <Py_buffer*>PyMem_Malloc((n if n else 1) * sizeof(Py_buffer))
    try:
        if views == NULL:
            raise MemoryError()
        if out.readonly:
            raise ValueError("gather: destination buffer is read-only")
        if not PyBuffer_IsContiguous(&out, b'C'):
            raise ValueError("gather: destination buffer is not C-contiguous")
        for i in range(n):
            PyObject_GetBuffer(srcs[i], &views[got], PyBUF_STRIDES)
            got += 1
            if not PyBuffer_IsContiguous(&views[got - 1], b'C'):
                raise ValueError("gather: source buffer is not C-contiguous")
            total += views[got - 1].len
        if total > out.len:
            raise ValueError(f"gather: destination holds {out.len} bytes, sources need {total}")
        base = <char*>out.buf
        with nogil:
            for i in range(got):
                if views[i].len:
                    memcpy(base + offset, views[i].buf, views[i].len)
                    offset += views[i].len
        return total
    finally:
        for i in range(got):
            PyBuffer_Release(&views[i])
        PyMem_Free(views)
        PyBuffer_Release(&out)


def split_rows(array, rows):
    """Views of consecutive row ranges of ``array`` along axis 0, ``rows[i]`` rows each.

    Raises ValueError if a count is negative, ``array`` is 0-d or the counts do not sum to its
    first dimension.
    """
    cdef Py_ssize_t start = 0, count
    cdef list out = []
    if array.ndim == 0:
        raise ValueError("split_rows: array has no batch dimension")
    for item in rows:
        count = item
        if count < 0:
            raise ValueError("split_rows: row counts must be >= 0")
        out.append(array[start:start + count])
        start += count
    if start != array.shape[0]:
        raise ValueError(f"split_rows: counts sum to {start}, array has {array.shape[0]} rows")
    return out
