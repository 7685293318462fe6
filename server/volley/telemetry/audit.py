"""The audit log: what went into a model and what came out, written off the request path.

A request hands its record to a bounded in-memory queue and goes on; a background task turns
records into JSON (tensors as v2 JSON, truncated past a byte limit with a flag) and writes them
to the sink. When the sink falls behind and the queue is full, records are dropped and counted,
never the request. Sinks:

* ``file:///dir``: JSON lines in ``dir/volley-audit-<n>.jsonl``, rotated at ``rotate_bytes``,
  the newest ``keep_files`` kept;
* ``http://host:port/path``: CloudEvents in binary mode, as KServe's payload logger sends them
  (``ce-type`` ``org.kserve.inference.request`` / ``.response``, the same ``ce-id`` for both);
* ``nats://host:port/subject``: one JSON message per record (needs the ``nats-py`` package).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import logging
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np

from volley.model import tensors

log = logging.getLogger("volley.audit")

#: What a model's traffic is logged as.
MODES = ("request", "response", "all")


@dataclass(slots=True)
class TensorRecord:
    """One tensor of a record: decoded lazily in the background."""

    name: str
    datatype: str
    shape: list[int]
    raw: bytes | memoryview | None = None
    values: Sequence[Any] | None = None
    array: np.ndarray | None = None


@dataclass(slots=True)
class AuditRecord:
    """Everything one request leaves in the audit log."""

    mode: str
    request_id: str
    model: str
    version: str
    started_ns: int
    finished_ns: int
    status: str
    error: str
    inputs: list[TensorRecord]
    outputs: list[TensorRecord]
    metadata: dict[str, str] = field(default_factory=dict)


def tensor_json(t: TensorRecord, max_bytes: int) -> dict[str, Any]:
    """A tensor as v2 JSON; data past ``max_bytes`` is cut and ``truncated`` set."""
    out: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
    try:
        array = t.array
        if array is None and t.raw is not None:
            array = tensors.from_raw(t.datatype, t.shape, t.raw, t.name)
        if array is None and t.values is not None:
            array = tensors.from_values(t.datatype, t.shape, t.values, t.name)
    except Exception as exc:  # malformed input: the audit log says so, never raises
        out["error"] = f"undecodable: {exc}"
        return out
    if array is None:
        return out
    flat = array.reshape(-1)
    itemsize = max(flat.itemsize, 1) if flat.dtype != object else 16
    keep = max(max_bytes // itemsize, 0)
    if flat.size > keep:
        flat = flat[:keep]
        out["truncated"] = True
    if flat.dtype == object:
        out["data"] = [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat
        ]
    elif t.datatype == "BF16" or flat.dtype.kind == "V":
        out["data"] = base64.b64encode(flat.tobytes()).decode()
    else:
        out["data"] = flat.tolist()
    return out


def record_json(record: AuditRecord, max_bytes: int) -> dict[str, Any]:
    """The JSON object of a record (both sides as the mode asks)."""
    body: dict[str, Any] = {
        "id": record.request_id,
        "model_name": record.model,
        "model_version": record.version,
        "received": record.started_ns / 1e9,
        "answered": record.finished_ns / 1e9,
        "status": record.status,
    }
    if record.error:
        body["error"] = record.error
    if record.metadata:
        body["metadata"] = record.metadata
    if record.mode in ("request", "all"):
        body["inputs"] = [tensor_json(t, max_bytes) for t in record.inputs]
    if record.mode in ("response", "all"):
        body["outputs"] = [tensor_json(t, max_bytes) for t in record.outputs]
    return body


class Sink(Protocol):
    """Where records go; ``write`` may block (it runs on a worker thread)."""

    def write(self, records: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


class FileSink:
    """Rotating JSON-lines files in a directory."""

    def __init__(self, directory: Path, rotate_bytes: int = 64 * 2**20, keep_files: int = 10):
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self._rotate = rotate_bytes
        self._keep = keep_files
        existing = sorted(self._dir.glob("volley-audit-*.jsonl"))
        self._index = int(existing[-1].stem.rsplit("-", 1)[1]) if existing else 0
        self._file = open(self._path(), "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def _path(self) -> Path:
        return self._dir / f"volley-audit-{self._index:06d}.jsonl"

    def write(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()
        if self._file.tell() >= self._rotate:
            self._file.close()
            self._index += 1
            self._file = open(self._path(), "a", encoding="utf-8")  # noqa: SIM115
            for old in sorted(self._dir.glob("volley-audit-*.jsonl"))[: -self._keep]:
                with contextlib.suppress(OSError):
                    old.unlink()

    def close(self) -> None:
        self._file.close()


class CloudEventsSink:
    """CloudEvents (binary mode) over HTTP POST, one event per side of each record."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._path = parts.path or "/"
        self._timeout = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def write(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            event_id = record.get("id") or str(uuid.uuid4())
            for side in ("inputs", "outputs"):
                if side not in record:
                    continue
                kind = "request" if side == "inputs" else "response"
                payload = {k: v for k, v in record.items() if k not in ("inputs", "outputs")}
                payload[side] = record[side]
                self._post(kind, str(event_id), record, json.dumps(payload).encode())

    def _post(self, kind: str, event_id: str, record: dict[str, Any], body: bytes) -> None:
        headers = {
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-type": f"org.kserve.inference.{kind}",
            "ce-source": f"volley/{record.get('model_name', '')}",
            "ce-time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "ce-inferenceservicename": str(record.get("model_name", "")),
            "content-type": "application/json",
        }
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout
                )
            try:
                self._conn.request("POST", self._path, body=body, headers=headers)
                response = self._conn.getresponse()
                response.read()
                if response.status >= 300:
                    raise OSError(f"audit sink answered HTTP {response.status}")
                return
            except (OSError, http.client.HTTPException):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class NatsSink:
    """One JSON message per record on a NATS subject (``nats-py``, on its own loop)."""

    def __init__(self, url: str) -> None:
        try:
            import nats  # noqa: F401
        except ImportError as exc:
            raise ValueError("a nats:// audit sink needs the nats-py package") from exc
        parts = urlsplit(url)
        self._server = f"nats://{parts.hostname or '127.0.0.1'}:{parts.port or 4222}"
        self._subject = parts.path.lstrip("/") or "volley.audit"
        self._loop = asyncio.new_event_loop()
        self._client: Any = None

    def write(self, records: list[dict[str, Any]]) -> None:
        self._loop.run_until_complete(self._publish(records))

    async def _publish(self, records: list[dict[str, Any]]) -> None:
        import nats

        if self._client is None or not self._client.is_connected:
            self._client = await nats.connect(self._server, connect_timeout=5)
        for record in records:
            await self._client.publish(self._subject, json.dumps(record).encode())
        await self._client.flush(timeout=5)

    def close(self) -> None:
        if self._client is not None:
            self._loop.run_until_complete(self._client.close())
        self._loop.close()


def open_sink(url: str) -> Sink:
    """The sink of an ``--audit-log-sink`` URL; ValueError for an unsupported one."""
    scheme = urlsplit(url).scheme
    if scheme == "file":
        return FileSink(Path(urlsplit(url).path))
    if scheme == "http":
        return CloudEventsSink(url)
    if scheme == "nats":
        return NatsSink(url)
    raise ValueError(f"unsupported audit sink '{url}': use file://, http:// or nats://")


class AuditLog:
    """Bounded queue in, background writer out; counts what was written and dropped."""

    def __init__(
        self,
        sink: Sink,
        *,
        sample_rate: float = 1.0,
        max_tensor_bytes: int = 4096,
        queue_size: int = 10_000,
        batch: int = 256,
    ) -> None:
        self._sink = sink
        self.sample_rate = sample_rate
        self._max_bytes = max_tensor_bytes
        self._queue: asyncio.Queue[AuditRecord] | None = None
        self._queue_size = queue_size
        self._batch = batch
        self._task: asyncio.Task[None] | None = None
        self._random = random.Random()
        self._writing = False
        #: Records by outcome: written, dropped (queue full), failed (sink error).
        self.counts = {"written": 0, "dropped": 0, "failed": 0}

    def start(self) -> None:
        """Start the background writer on the running loop."""
        self._queue = asyncio.Queue(self._queue_size)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="volley-audit")

    def sampled(self) -> bool:
        """Whether this request is logged (``sample_rate`` of them)."""
        return self.sample_rate >= 1.0 or self._random.random() < self.sample_rate

    def submit(self, record: AuditRecord) -> None:
        """Queue a record without waiting; dropped (and counted) when the queue is full."""
        queue = self._queue
        if queue is None:
            return
        try:
            queue.put_nowait(record)
        except asyncio.QueueFull:
            self.counts["dropped"] += 1

    async def _run(self) -> None:
        queue = self._queue
        assert queue is not None
        loop = asyncio.get_running_loop()
        while True:
            records = [await queue.get()]
            while len(records) < self._batch and not queue.empty():
                records.append(queue.get_nowait())
            self._writing = True
            try:
                # JSON and I/O on a worker thread: the loop only hands records over
                await loop.run_in_executor(None, self._write, records)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.counts["failed"] += len(records)
                log.warning("audit sink failed, %d record(s) lost: %s", len(records), exc)
            else:
                self.counts["written"] += len(records)
            finally:
                self._writing = False

    def _write(self, records: list[AuditRecord]) -> None:
        self._sink.write([record_json(r, self._max_bytes) for r in records])

    async def stop(self, flush_s: float = 2.0) -> None:
        """Write what is queued (up to ``flush_s``), then close the sink."""
        queue = self._queue
        if queue is not None:
            deadline = time.monotonic() + flush_s
            while (not queue.empty() or self._writing) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        if self._task is not None:
            await asyncio.sleep(0)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.get_running_loop().run_in_executor(None, self._sink.close)
