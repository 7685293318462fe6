"""The response cache (as Triton's ``--cache-config local,size=BYTES``).

A byte-bounded LRU map from a hash of (model, version, load, input tensors, requested outputs)
to the outputs a computation produced. Only models whose configuration has
``response_cache { enable: true }`` and that are deterministic use it: a model is treated as
non-deterministic when its configuration sets the parameter ``volley.nondeterministic`` to
``true`` or its ONNX graph holds a random-number operator (``RandomNormal``,
``RandomUniform``, ``RandomNormalLike``, ``RandomUniformLike``, ``Multinomial``,
``Bernoulli``). A hit returns the stored outputs without queueing; entries are copies, so what
a client gets back is byte-identical to what was computed.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable

import numpy as np

from volley.memory.budget import parse_size
from volley.model import tensors

#: Bytes each entry costs beyond its arrays (key, dict, bookkeeping).
_ENTRY_OVERHEAD = 256


def parse_cache_config(values: Iterable[str]) -> int:
    """The byte size of ``--cache-config local,size=BYTES`` (0: no cache); ValueError when
    malformed. Sizes may carry a unit (``512MiB``)."""
    size = 0
    for value in values:
        name, _, rest = value.partition(",")
        if name.strip() != "local":
            raise ValueError(f"--cache-config '{value}': only the 'local' cache exists")
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, _, number = item.partition("=")
            if key.strip() != "size":
                raise ValueError(f"--cache-config '{value}': unknown setting '{key}'")
            try:
                size = parse_size(number)
            except ValueError as exc:
                raise ValueError(f"--cache-config '{value}': {exc}") from None
    return size


def _nbytes(outputs: dict[str, np.ndarray]) -> int:
    total = _ENTRY_OVERHEAD
    for array in outputs.values():
        if array.dtype.hasobject:
            total += sum(len(v) if isinstance(v, bytes | str) else 64 for v in array.flat)
        total += array.nbytes
    return total


class ResponseCache:
    """Outputs by request hash, least recently used evicted first, within ``capacity`` bytes."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.bytes = 0
        self._entries: OrderedDict[bytes, tuple[dict[str, np.ndarray], int]] = OrderedDict()
        #: Lookups that hit and missed, entries inserted and evicted (all models).
        self.hits = 0
        self.misses = 0
        self.inserts = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(
        model: str,
        version: int,
        load_id: int,
        inputs: dict[str, np.ndarray],
        outputs: Iterable[str],
    ) -> bytes:
        """The hash of a request: what the model would compute from it."""
        h = hashlib.blake2b(digest_size=20)
        h.update(f"{model}\0{version}\0{load_id}\0".encode())
        for name in sorted(inputs):
            array = inputs[name]
            h.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
            if array.dtype.hasobject:
                h.update(tensors.serialize_bytes(array))
            else:
                h.update(np.ascontiguousarray(array).view(np.uint8).data)
        h.update(("\0".join(outputs) + "\0").encode())
        return h.digest()

    def get(self, key: bytes) -> dict[str, np.ndarray] | None:
        """The outputs stored for ``key`` (marked most recently used), or None."""
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return found[0]

    def put(self, key: bytes, outputs: dict[str, np.ndarray]) -> bool:
        """Store copies of ``outputs``; False when they alone exceed the capacity."""
        stored = {name: np.array(array, copy=True) for name, array in outputs.items()}
        size = _nbytes(stored)
        if size > self.capacity:
            return False
        previous = self._entries.pop(key, None)
        if previous is not None:
            self.bytes -= previous[1]
        while self._entries and self.bytes + size > self.capacity:
            _, (_, freed) = self._entries.popitem(last=False)
            self.bytes -= freed
            self.evictions += 1
        self._entries[key] = (stored, size)
        self.bytes += size
        self.inserts += 1
        return True
