"""``InferenceService``: the transport-free data plane every frontend calls.

Resolve, readiness, metadata, infer, stream, statistics, repository index, load and unload,
in protocol-neutral types (``serving.types``). Request outcomes are recorded here, once, for
every transport.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from volley._proto.inference import model_config_pb2 as mc
from volley.errors import (
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    Unimplemented,
    VolleyError,
)
from volley.repository.config_io import parse_json, safe_yaml
from volley.repository.traffic import parse_traffic
from volley.serving import codec
from volley.serving.cache import ResponseCache
from volley.serving.ensemble import composed_ready
from volley.serving.lifecycle import ModelManager
from volley.serving.monitor import ModelMonitor
from volley.serving.registry import ModelEntry, ModelState, ModelVersion, Registry
from volley.serving.shadow import ShadowRunner
from volley.serving.shm import SharedMemory
from volley.serving.types import (
    IndexEntry,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ParamValue,
    ServerMetadata,
    TensorMetadata,
)
from volley.telemetry.audit import MODES, AuditLog, AuditRecord, TensorRecord
from volley.telemetry.logs import LogControl
from volley.telemetry.metrics import ModelSnapshot
from volley.telemetry.release_metrics import CacheSnapshot, ReleaseSnapshot
from volley.telemetry.stats import ModelStats, failure_reason
from volley.telemetry.tracing import TraceConfig, Tracing

T = TypeVar("T")

_now = time.monotonic_ns

requests_log = logging.getLogger("volley.requests")

#: Requests of one stream that may be in flight at once before its reader waits.
STREAM_WINDOW = 64


@dataclass(slots=True)
class StreamResult(Generic[T]):
    """One message of a stream and what became of it: a response or an error."""

    source: T
    response: InferenceResponse | None = None
    error: BaseException | None = None


#: Requests carrying more raw bytes than this are decoded on a worker thread.
_DECODE_OFF_LOOP_BYTES = 4 << 20


def _raw_bytes(request: InferenceRequest) -> int:
    return sum(len(t.raw) for t in request.inputs if t.raw is not None)


def _status_of(exc: BaseException) -> tuple[str, str]:
    """A status name and client-facing message for the audit log."""
    if isinstance(exc, VolleyError):
        return exc.code.value, exc.message
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED", "the call was cancelled"
    return "INTERNAL", "internal error"


class InferenceService:
    """Everything a transport needs, over the registry and the model lifecycle."""

    def __init__(
        self,
        registry: Registry,
        manager: ModelManager,
        *,
        server_name: str = "volley",
        server_version: str = "",
        extensions: tuple[str, ...] = (),
        explicit_control: bool = False,
        strict_readiness: bool = True,
        max_inflight: int = 0,
        load_on_demand: bool = True,
        load_timeout_s: float = 60.0,
    ) -> None:
        self.registry = registry
        self.manager = manager
        self._metadata = ServerMetadata(server_name, server_version, extensions)
        self._explicit = explicit_control
        self._strict_readiness = strict_readiness
        self._max_inflight = max_inflight
        #: The audit log, and what it records by default (``request``, ``response``, ``all``;
        #: a model's ``volley.audit`` parameter overrides it, ``off`` included).
        self.audit: AuditLog | None = None
        self.audit_mode = ""
        #: Request metadata keys a transport copies into requests (for the audit log).
        self.header_keys: frozenset[str] = frozenset()
        self._load_on_demand = load_on_demand
        self._load_timeout_s = load_timeout_s
        #: Inference requests inside ``infer`` right now (all models, all transports).
        self.inflight = 0
        #: Server-wide counters (refusals, model loads), shared with the model manager.
        self.server_stats = manager.stats
        #: True once the transports accept calls; False again when the server stops.
        self.live = False
        #: True while shutting down: the server is no longer ready.
        self.draining = False
        #: Log one line per inference request (``volley.requests``, INFO).
        self.log_requests = False
        #: Request tracing; transports start a request's span when ``tracing.enabled``.
        self.tracing = Tracing(TraceConfig())
        #: Log levels and format (the logging extension).
        self.logs = LogControl()
        #: Registered system shared memory regions (the shared-memory extension).
        self.shm = SharedMemory()
        #: The response cache (``--cache-config``), used by models that enable it.
        self.cache: ResponseCache | None = None
        #: Shadow copies of served requests and how they compared.
        self.shadows = ShadowRunner()

    # -- health and metadata ------------------------------------------------------------------
    def server_ready(self) -> bool:
        """Readiness as Triton defines it (strict: every known version READY)."""
        if not self.live or self.draining:
            return False
        if not self._strict_readiness:
            return True
        for entry in self.registry.entries():
            if entry.failed:
                return False
            for mv in entry.versions.values():
                if mv.state is not ModelState.READY and not mv.unloaded:
                    return False
                if not composed_ready(mv):
                    return False
        return True

    def model_ready(self, name: str, version: str) -> bool:
        """True when that version (or the model's default) serves requests (an ensemble:
        and every composing model does)."""
        mv = self.registry.lookup(name, version)
        return mv.ready and composed_ready(mv)

    def server_metadata(self) -> ServerMetadata:
        """Server name, version and the protocol extensions it implements."""
        return self._metadata

    def model_metadata(self, name: str, version: str) -> ModelMetadata:
        """Inputs, outputs and READY versions of a model (or of one version)."""
        mv = self.registry.resolve(name, version)
        spec = mv.spec
        entry = self.registry.get(name)
        assert entry is not None
        if version:
            versions = [mv.version_str]
        else:
            versions = [v.version_str for _, v in sorted(entry.versions.items()) if v.ready]
        labels = entry.traffic.labels if entry.traffic is not None else {}
        batch = spec.max_batch_size
        return ModelMetadata(
            name=spec.name,
            versions=versions,
            platform=spec.platform or spec.backend,
            inputs=[TensorMetadata(t.name, t.datatype, t.full_shape(batch)) for t in spec.inputs],
            outputs=[TensorMetadata(t.name, t.datatype, t.full_shape(batch)) for t in spec.outputs],
            labels={label: str(v) for label, v in sorted(labels.items())},
        )

    def model_config(self, name: str, version: str) -> mc.ModelConfig:
        """The effective configuration of a READY version."""
        return self.registry.resolve(name, version).spec.config

    # -- inference ----------------------------------------------------------------------------
    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        """Validate, queue and run one request; its outcome is recorded in the statistics."""
        if self.draining:
            self.server_stats.record_rejected("draining")
            raise Unavailable("the server is shutting down and accepts no new requests")
        if self._max_inflight and self.inflight >= self._max_inflight:
            self.server_stats.record_rejected("inflight_cap")
            raise ResourceExhausted(
                f"the server is at its limit of {self._max_inflight} requests in flight; "
                "try again later"
            )
        entry: ModelEntry | None
        try:
            mv, entry = self.registry.route(
                request.model_name, request.model_version, request.parameters
            )
        except (NotFound, Unavailable):
            mv, entry = await self._resolve_evicted(request), None
        self.inflight += 1
        try:
            response = await self._infer(mv, request)
        except BaseException as exc:
            mv.stats.record_failure(_now() - request.arrival_ns, failure_reason(exc))
            if self.audit is not None:
                self._audit(mv, request, None, exc)
            if request.trace is not None:
                request.trace.finish(exc)
            if self.log_requests:
                self._log_request(request, mv, exc)
            raise
        finally:
            self.inflight -= 1
        mv.stats.record_success(_now() - request.arrival_ns)
        if entry is not None and entry.router is not None:
            self.shadows.offer(entry, mv, request, response)
        if self.audit is not None:
            self._audit(mv, request, response, None)
        if request.trace is not None:
            request.trace.version = response.model_version
            request.trace.finish()
        if self.log_requests:
            self._log_request(request, mv, None)
        return response

    def _log_request(
        self, request: InferenceRequest, mv: ModelVersion, error: BaseException | None
    ) -> None:
        """One line per request: who, what, how it ended and how long it took (no tensors)."""
        status, message = ("OK", "") if error is None else _status_of(error)
        requests_log.info(
            "infer model=%s version=%s id=%s status=%s duration_us=%d%s",
            mv.name,
            mv.version_str,
            request.id or "-",
            status,
            (_now() - request.arrival_ns) // 1000,
            f" error={message!r}" if message else "",
        )

    def _audit(
        self,
        mv: ModelVersion,
        request: InferenceRequest,
        response: InferenceResponse | None,
        error: BaseException | None,
    ) -> None:
        """Queue an audit record when the model's mode and the sampling say so."""
        audit = self.audit
        assert audit is not None
        mode = mv.spec.parameters.get("volley.audit", self.audit_mode)
        if mode not in MODES or not audit.sampled():
            return
        status, message = ("OK", "") if error is None else _status_of(error)
        audit.submit(
            AuditRecord(
                mode=mode,
                request_id=request.id,
                model=mv.name,
                version=mv.version_str,
                started_ns=time.time_ns() - (_now() - request.arrival_ns),
                finished_ns=time.time_ns(),
                status=status,
                error=message,
                inputs=[
                    TensorRecord(t.name, t.datatype, t.shape, t.raw, t.values)
                    for t in request.inputs
                ]
                if mode != "response"
                else [],
                outputs=[
                    TensorRecord(o.name, o.datatype, list(o.array.shape), array=o.array)
                    for o in response.outputs
                ]
                if response is not None and mode != "request"
                else [],
                metadata=dict(request.headers or {}),
            )
        )

    async def _resolve_evicted(self, request: InferenceRequest) -> ModelVersion:
        """Load an evicted model again for this request (one load for all who wait), or raise
        the resolution error when the model was not evicted."""
        name, version = request.model_name, request.model_version
        entry = self.registry.get(name)
        if entry is None or not entry.evicted or not self._load_on_demand:
            return self.registry.resolve(name, version)
        try:
            await self.manager.ensure_loaded(name, self._load_timeout_s)
        except TimeoutError as exc:
            raise Unavailable(
                f"model '{name}' was evicted and loading it again took longer than "
                f"{self._load_timeout_s:g}s; try again"
            ) from exc
        except VolleyError as exc:
            raise Unavailable(
                f"model '{name}' was evicted and could not be loaded again: {exc.message}"
            ) from exc
        return self.registry.resolve(name, version)

    async def _infer(self, mv: ModelVersion, request: InferenceRequest) -> InferenceResponse:
        scheduler = mv.scheduler
        if scheduler is None:
            raise Unavailable(f"'{mv.name}' version {mv.version} is not at ready state")
        if _raw_bytes(request) > _DECODE_OFF_LOOP_BYTES:
            # a huge request (BYTES parsing, copies) must not stall every other call
            decoded = await asyncio.to_thread(codec.decode, request, mv.spec, self.shm)
        else:
            decoded = codec.decode(request, mv.spec, self.shm)
        if mv.monitor is not None:
            mv.monitor.observe(decoded.request.inputs)
        if request.trace is not None:
            decoded.request.trace = request.trace
        cache = self.cache if mv.cacheable else None
        if cache is not None:
            started = _now()
            key = cache.key(
                mv.name, mv.version, mv.load_id, decoded.request.inputs, decoded.outputs
            )
            hit = cache.get(key)
            if hit is not None:
                mv.stats.cache_hit.add(_now() - started)
                return codec.encode(
                    mv.spec,
                    mv.version_str,
                    request.id,
                    hit,
                    decoded.outputs,
                    decoded.shm_outputs,
                    self.shm,
                )
            looked_up = _now() - started
        try:
            outputs = await scheduler.infer(decoded.request)
        except Unavailable:
            # A request naming no version that met its version being swapped out goes to
            # what the registry serves now, once.
            fresh = self.registry.resolve(request.model_name, request.model_version)
            if request.model_version or fresh is mv or fresh.scheduler is None:
                raise
            mv, decoded = fresh, codec.decode(request, fresh.spec, self.shm)
            decoded.request.trace = request.trace
            outputs = await fresh.scheduler.infer(decoded.request)
            cache = None
        if cache is not None:
            started = _now()
            cache.put(key, outputs)
            mv.stats.cache_miss.add(looked_up + _now() - started)
        return codec.encode(
            mv.spec,
            mv.version_str,
            request.id,
            outputs,
            decoded.outputs,
            decoded.shm_outputs,
            self.shm,
        )

    async def stream(
        self, messages: AsyncIterator[T], convert: Callable[[T], InferenceRequest]
    ) -> AsyncIterator[StreamResult[T]]:
        """Run a stream's requests concurrently; results come in arrival order.

        ``convert`` turns one transport message into a request (its errors become that
        message's error). At most ``STREAM_WINDOW`` requests are in flight: beyond that the
        reader stops taking messages until the client reads results (back-pressure).
        """
        order: asyncio.Queue[asyncio.Task[StreamResult[T]] | None] = asyncio.Queue(STREAM_WINDOW)

        async def one(message: T) -> StreamResult[T]:
            try:
                response = await self.infer(convert(message))
            except Exception as exc:
                return StreamResult(message, error=exc)
            return StreamResult(message, response=response)

        async def read() -> None:
            try:
                async for message in messages:
                    await order.put(asyncio.ensure_future(one(message)))
            finally:
                await order.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (task := await order.get()) is not None:
                yield await task
            await reader
        finally:
            reader.cancel()
            while not order.empty():
                leftover = order.get_nowait()
                if leftover is not None:
                    leftover.cancel()

    def model_snapshots(self) -> list[ModelSnapshot]:
        """Every served version's statistics and queue, for the metrics collector."""
        out: list[ModelSnapshot] = []
        for entry in self.registry.entries():
            for mv in entry.versions.values():
                scheduler = mv.scheduler
                if scheduler is None:
                    continue
                snapshot = ModelSnapshot(mv.stats, scheduler.queued, scheduler.pending)
                monitor = mv.monitor
                if monitor is not None:
                    snapshot.drift = {n: r["psi"] for n, r in monitor.reports.items()}
                    snapshot.monitored_rows, snapshot.outliers = monitor.rows, monitor.outliers
                out.append(snapshot)
        return out

    def monitors(self) -> list[ModelMonitor]:
        """The monitors of every READY version."""
        return [
            mv.monitor
            for entry in self.registry.entries()
            for mv in entry.versions.values()
            if mv.monitor is not None and mv.ready
        ]

    def monitoring(self, name: str) -> dict[str, Any]:
        """The drift and outlier view of a model's READY versions."""
        entry = self.registry.get(name)
        if entry is None:
            raise NotFound(f"Request for unknown model: '{name}' is not found")
        views = [
            mv.monitor.view()
            for _, mv in sorted(entry.versions.items())
            if mv.monitor is not None and mv.ready
        ]
        if not views:
            raise Unavailable(
                f"model '{name}' is not monitored (start the server with --monitor-sample-rate)"
            )
        return {"model": name, "versions": views}

    def release_snapshot(self) -> ReleaseSnapshot:
        """Shadow comparisons and the response cache, for the metrics collector."""
        cache = self.cache
        return ReleaseSnapshot(
            shadows=list(self.shadows.stats.values()),
            cache=CacheSnapshot(cache.capacity, cache.bytes, len(cache), cache.evictions)
            if cache is not None
            else None,
        )

    def traffic(self, name: str) -> dict[str, Any]:
        """A model's release policy, the versions it routes to, and the shadow comparisons."""
        entry = self.registry.get(name)
        if entry is None:
            raise NotFound(f"Request for unknown model: '{name}' is not found")
        policy = entry.traffic
        return {
            "model": name,
            "policy": policy.describe() if policy is not None else {},
            "ready_versions": [v.version_str for _, v in sorted(entry.versions.items()) if v.ready],
            "shadow": self.shadows.views(name),
        }

    # -- trace and log settings ---------------------------------------------------------------
    def trace_settings(
        self, model: str, changes: Mapping[str, Sequence[str] | None] | None = None
    ) -> dict[str, list[str]]:
        """Triton's ``TraceSetting``: apply ``changes`` (if any) for ``model`` (or server-wide)
        and return the settings in force."""
        if model and self.registry.get(model) is None:
            raise NotFound(f"Request for unknown model: '{model}' is not found")
        if changes:
            self.tracing.update(changes, model)
        return self.tracing.settings(model)

    def log_settings(self, changes: Mapping[str, Any] | None = None) -> dict[str, bool | int | str]:
        """Triton's ``LogSettings``: apply ``changes`` (if any) and return the settings."""
        if changes:
            self.logs.update(changes)
        return self.logs.settings()

    # -- statistics and repository ------------------------------------------------------------
    def statistics(self, name: str, version: str) -> list[ModelStats]:
        """Statistics of every READY version, of one model, or of one version."""
        if not name:
            return [
                mv.stats
                for entry in self.registry.entries()
                for _, mv in sorted(entry.versions.items())
                if mv.ready
            ]
        named = self.registry.get(name)
        if named is None or named.default is None:
            raise InvalidArgument(f"requested model '{name}' is not available")
        if version:
            mv = self.registry.lookup(name, version)
            if not mv.ready:
                raise InvalidArgument(
                    f"requested model '{name}' version {version} is not available"
                )
            return [mv.stats]
        return [mv.stats for _, mv in sorted(named.versions.items()) if mv.ready]

    def repository_index(self, ready_only: bool) -> list[IndexEntry]:
        """Every model of the repositories, with each known version's state and reason.

        A version whose last load failed while an earlier one kept serving shows that reason:
        on its serving row, or as an UNAVAILABLE row when no such version serves.
        """
        rows: list[IndexEntry] = []
        for name in sorted(self.manager.model_dirs()):
            entry = self.registry.get(name)
            if entry is None or (not entry.versions and not entry.reason):
                if not ready_only:
                    rows.append(IndexEntry(name))
                continue
            if not entry.versions and not entry.load_errors:
                if not ready_only:
                    rows.append(
                        IndexEntry(name, state=ModelState.UNAVAILABLE.value, reason=entry.reason)
                    )
                continue
            errors = entry.load_errors
            for version in sorted(set(entry.versions) | set(errors)):
                mv = entry.versions.get(version)
                if mv is None:
                    if not ready_only:
                        rows.append(
                            IndexEntry(
                                name, str(version), ModelState.UNAVAILABLE.value, errors[version]
                            )
                        )
                    continue
                if ready_only and not mv.ready:
                    continue
                reason = mv.reason
                if version in errors and mv.ready:
                    reason = f"serving; the last load failed: {errors[version]}"
                rows.append(IndexEntry(name, mv.version_str, mv.state.value, reason))
        return rows

    async def load(self, name: str, parameters: Mapping[str, ParamValue]) -> None:
        """``RepositoryModelLoad``: (re)load a model in explicit control mode."""
        self._check_explicit()
        override = None
        traffic = None
        for key, value in parameters.items():
            if key == "config":
                if not isinstance(value, str):
                    raise InvalidArgument("load parameter 'config' must be a JSON string")
                override = parse_json(value, path="the load request's 'config'")
            elif key == "traffic":
                if not isinstance(value, str):
                    raise InvalidArgument("load parameter 'traffic' must be a YAML or JSON string")
                where = "the load request's 'traffic'"
                traffic = parse_traffic(safe_yaml(value, path=where), path=where)
            elif key.startswith("file:"):
                raise Unimplemented(
                    f"load parameter '{key}': model files in the request are not supported; "
                    "put them in the model repository"
                )
            else:
                raise InvalidArgument(
                    f"unrecognized load parameter '{key}' (only 'config' and 'traffic' are "
                    "supported)"
                )
        try:
            await self.manager.load(name, override, traffic)
        except ResourceExhausted:
            raise
        except VolleyError as exc:
            raise InvalidArgument(f"load failed for model '{name}': {exc.message}") from exc

    async def unload(self, name: str) -> None:
        """``RepositoryModelUnload``: stop serving a model; in-flight requests finish."""
        self._check_explicit()
        await self.manager.unload(name)

    def _check_explicit(self) -> None:
        if not self._explicit:
            raise Unavailable("explicit model load / unload is not allowed if polling is enabled")
