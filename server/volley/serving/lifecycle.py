"""Model lifecycle: load versions beside the serving ones, swap them in, drain, unload.

A load (at start, from ``RepositoryModelLoad`` or from the repository poller) reads the
model's configuration off the event loop, then for each version the policy selects:

* keeps the serving version when neither its files nor its configuration changed;
* swaps in a new batcher over the same instances when only the scheduling changed
  (``dynamic_batching``: batch sizes, delay, queue policy): no session is reloaded;
* otherwise loads the version beside the one serving, warms it up, and only then publishes it.

The registry entry is replaced in one step; versions no longer served stop taking new
requests, answer every request they had accepted (queued ones included) and are unloaded. A
version that fails to load or warm up leaves what serves untouched, and its reason shows in
``RepositoryIndex``. Loads run on their own bounded thread pool and are shielded from the
caller's cancellation, so a client that gives up never leaves a half-loaded model behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from volley._proto.inference import model_config_pb2 as mc
from volley.backends import BackendInspector, get_backend
from volley.backends.base import LoadedModel
from volley.backends.warmup import run_warmup
from volley.errors import ConfigError, ResourceExhausted, VolleyError
from volley.memory import host
from volley.memory.budget import device_name, format_bytes
from volley.memory.manager import MemoryManager, Usage
from volley.memory.probe import Probes
from volley.repository import layout, watcher
from volley.repository.loader import LoadedConfig, load_model_config
from volley.repository.traffic import TrafficPolicy
from volley.scheduler.base import Scheduler
from volley.scheduler.batcher import DynamicBatcher
from volley.scheduler.sequence import SequenceBatcher
from volley.serving.ensemble import EnsembleScheduler
from volley.serving.monitor import ModelMonitor, MonitorSettings
from volley.serving.registry import ModelEntry, ModelState, ModelVersion, Registry
from volley.telemetry.stats import ServerStats

log = logging.getLogger("volley.serving")

T = TypeVar("T")

#: A load briefly holds about this many times its final footprint (file buffer and parsed
#: weights beside the runtime's tensors); a budgeted load is admitted with that much room.
_LOAD_PEAK_FACTOR = 2

#: Fields of ``ModelConfig`` that a new batcher can apply without reloading the sessions.
_SCHEDULING_FIELDS = ("dynamic_batching",)


def _failure_text(exc: BaseException) -> str:
    """What a failed load reports: the error's own message, or its kind when unexpected."""
    if isinstance(exc, VolleyError):
        return exc.message
    return f"unexpected {type(exc).__name__} while loading (see the server log)"


def _as_volley_error(exc: BaseException) -> VolleyError:
    return exc if isinstance(exc, VolleyError) else ConfigError(_failure_text(exc))


def _version_at_fault(exc: BaseException, model_dir: Path) -> int | None:
    """The version folder a configuration error points into, if any (a corrupt new file)."""
    path = getattr(exc, "path", "")
    if not path:
        return None
    try:
        first = Path(path).resolve().relative_to(model_dir.resolve()).parts[0]
    except (ValueError, IndexError, OSError):
        return None
    return layout.version_of_dir(first)


def _without_scheduling(config: mc.ModelConfig) -> bytes:
    stripped = mc.ModelConfig()
    stripped.CopyFrom(config)
    for name in _SCHEDULING_FIELDS:
        stripped.ClearField(name)  # type: ignore[arg-type]
    return stripped.SerializeToString(deterministic=True)


def _cacheable(mv: ModelVersion) -> bool:
    """The response cache may answer for ``mv``: enabled, and deterministic (see cache.py)."""
    spec = mv.spec
    if not spec.config.response_cache.enable:
        return False
    if spec.parameters.get("volley.nondeterministic", "").lower() == "true":
        return False
    return mv.loaded is None or mv.loaded.deterministic


class ModelManager:
    """Loads and unloads models of one or more repositories into a ``Registry``."""

    def __init__(
        self,
        repositories: list[Path],
        registry: Registry,
        *,
        auto_complete: bool = True,
        default_max_batch_size: int = 4,
        gpu_count: int = 0,
        inline_execution_us: int = 0,
        load_threads: int = 4,
        drain_timeout_s: float = 30.0,
        memory: MemoryManager | None = None,
        pinned: frozenset[str] = frozenset(),
        admit_wait_s: float = 60.0,
        probes: Probes | None = None,
        monitoring: MonitorSettings | None = None,
    ) -> None:
        self.repositories = repositories
        self.registry = registry
        self._auto_complete = auto_complete
        self._default_max_batch_size = default_max_batch_size
        self._gpu_count = gpu_count
        self._inline_execution_us = inline_execution_us
        self._drain_timeout_s = drain_timeout_s
        self._inspector = BackendInspector()
        self._locks: dict[str, asyncio.Lock] = {}
        self._executor = ThreadPoolExecutor(load_threads, thread_name_prefix="volley-load")
        #: Server-wide counters: model loads and unloads here, refusals in the service.
        self.stats = ServerStats()
        #: What each model's directory held at its last load attempt (the poller compares).
        self.attempted: dict[str, watcher.DirectoryScan] = {}
        #: Budgets and footprints; None = no budget (nothing is ever evicted).
        self.memory = memory
        if memory is not None:
            self.stats.memory_budgets = dict(memory.budgets)
            self.stats.memory_held = lambda: {d: memory.held(d) for d in memory.budgets}
        #: Models never evicted (``--pin-model``, or the ``volley.pinned`` config parameter).
        self.pinned = set(pinned)
        #: How long a load waits for busy or just-loaded models to become evictable.
        self._admit_wait_s = admit_wait_s
        self._device_locks: dict[str, asyncio.Lock] = {}
        self._measure_lock = asyncio.Lock()
        self._probes = probes or Probes()
        self._monitoring = monitoring
        self._loading: set[str] = set()
        self._on_demand: dict[str, asyncio.Future[None]] = {}
        #: Models being loaded again because requests wait for them.
        self._wanted: set[str] = set()

    def model_dirs(self) -> dict[str, Path | None]:
        """Every model directory by name; a name found in two repositories maps to None."""
        found: dict[str, Path | None] = {}
        for repo in self.repositories:
            for name, model_dir in layout.list_models(repo).items():
                found[name] = None if name in found else model_dir
        return found

    def _relative(self, text: str) -> str:
        """``text`` with the repositories' absolute paths made relative to them."""
        for repo in self.repositories:
            for root in {str(repo.resolve()), str(repo.absolute()), str(repo)}:
                text = text.replace(root.rstrip("/") + "/", "")
        return text

    def _reason(self, exc: BaseException) -> str:
        """What a failed load reports to clients: no absolute paths."""
        return self._relative(_failure_text(exc))

    def _client_error(self, exc: BaseException) -> VolleyError:
        """The error a load raises to its caller, without absolute paths."""
        if isinstance(exc, ConfigError):
            return ConfigError(self._relative(exc.message), path=exc.path, hint=exc.hint)
        return _as_volley_error(exc)

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    async def _off_loop(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    # -- load ----------------------------------------------------------------------------------
    async def load(
        self,
        name: str,
        config: mc.ModelConfig | None = None,
        traffic: TrafficPolicy | None = None,
    ) -> None:
        """Load or update every version of ``name`` the policy selects (``config`` overrides
        the configuration file, ``traffic`` the traffic file). Finishes even if the caller is
        cancelled."""
        await asyncio.shield(asyncio.ensure_future(self._load(name, config, traffic)))

    async def _load(
        self, name: str, override: mc.ModelConfig | None, traffic: TrafficPolicy | None = None
    ) -> None:
        async with self._lock(name):
            self._loading.add(name)
            try:
                if self.memory is None:
                    await self._load_locked(name, override, traffic)
                else:
                    # With budgets, loads run one at a time, reading the configuration
                    # included (it parses the model file), so that each measured footprint
                    # is the load's own.
                    async with self._measure_lock:
                        await self._load_locked(name, override, traffic)
            finally:
                self._loading.discard(name)

    async def _load_locked(
        self, name: str, override: mc.ModelConfig | None, traffic: TrafficPolicy | None = None
    ) -> None:
        dirs = self.model_dirs()
        if name not in dirs:
            raise ConfigError(f"failed to load '{name}': no such model in the repository")
        model_dir = dirs[name]
        if model_dir is None:
            reason = f"model '{name}' appears in more than one repository"
            self.registry.publish(ModelEntry.of(name, {}, reason))
            raise ConfigError(reason)
        self.attempted[name] = await self._off_loop(watcher.scan_model, model_dir)
        try:
            cfg = await self._off_loop(
                load_model_config,
                model_dir,
                self._inspector.read_signature,
                gpu_count=self._gpu_count,
                default_max_batch_size=self._default_max_batch_size,
                auto_complete=self._auto_complete,
                override=override,
                traffic_override=traffic,
            )
        except Exception as exc:
            version = _version_at_fault(exc, model_dir)
            failed = {version: self._reason(exc)} if version is not None else {}
            self._failed(name, exc, failed)
            raise self._client_error(exc) from exc
        await self._apply(name, model_dir, cfg)

    async def _apply(self, name: str, model_dir: Path, cfg: LoadedConfig) -> None:
        old = self.registry.get(name)
        old_versions = dict(old.versions) if old is not None else {}
        config_bytes = cfg.config.SerializeToString(deterministic=True)
        serving: dict[int, ModelVersion] = {}
        created: list[ModelVersion] = []
        handed_over: dict[int, ModelVersion] = {}
        failed: dict[int, str] = {}
        first_error: BaseException | None = None
        for version, path in sorted(cfg.versions.items()):
            files = await self._off_loop(watcher.version_files, path.parent)
            prev = old_versions.get(version)
            if prev is not None and prev.ready and prev.files == files:
                if prev.config_bytes == config_bytes:
                    serving[version] = prev
                    continue
                if _without_scheduling(prev.spec.config) == _without_scheduling(cfg.config):
                    serving[version] = self._rebatch(prev, cfg, config_bytes)
                    handed_over[version] = prev
                    continue
            mv = ModelVersion(name, version, cfg.spec, files=files, config_bytes=config_bytes)
            created.append(mv)
            try:
                await self._load_version(mv, path, model_dir)
            except Exception as exc:
                reason = self._reason(exc)
                mv.state, mv.reason = ModelState.UNAVAILABLE, reason
                failed[version] = reason
                first_error = exc
                self._log_failure(name, exc, version)
                await self._release(mv)
                break
        if failed:
            for mv in created:
                await self._release(mv)
                if mv.state is ModelState.READY:
                    mv.state = ModelState.UNAVAILABLE
            for version in handed_over:
                fresh = serving[version]
                if fresh.scheduler is not None:
                    await fresh.scheduler.stop()
                fresh.loaded = None  # the previous version keeps its batcher and instances
            self._failed(name, None, failed, created)
            if isinstance(first_error, ResourceExhausted):
                raise first_error
            raise ConfigError(
                "; ".join(f"version {v}: {reason}" for v, reason in sorted(failed.items()))
            )
        for mv in created:
            serving[mv.version] = mv
        self.registry.publish(
            ModelEntry.of(
                name, serving, traffic=cfg.traffic, router=old.router if old is not None else None
            )
        )
        self.stats.loads["success"] += 1
        log.info(
            "model '%s' serving versions %s (%d loaded, %d updated in place)",
            name,
            sorted(serving),
            len(created),
            len(handed_over),
        )
        for version, prev in old_versions.items():
            if serving.get(version) is prev:
                continue
            if handed_over.get(version) is prev:
                await self._drain(prev)
                prev.loaded = None  # the instances now belong to the new batcher
                prev.state = ModelState.UNAVAILABLE
                continue
            await self._drain_and_release(prev)

    def _rebatch(self, prev: ModelVersion, cfg: LoadedConfig, config_bytes: bytes) -> ModelVersion:
        """A new version object with a new batcher over ``prev``'s instances."""
        assert prev.loaded is not None
        mv = ModelVersion(
            prev.name, prev.version, cfg.spec, files=prev.files, config_bytes=config_bytes
        )
        mv.stats = prev.stats
        mv.monitor = prev.monitor
        mv.loaded = prev.loaded
        mv.cacheable = _cacheable(mv)
        batcher = self._scheduler(mv)
        batcher.start()
        mv.scheduler = batcher
        mv.state = ModelState.READY
        return mv

    def _scheduler(self, mv: ModelVersion) -> Scheduler:
        """The scheduler of a loaded version: the sequence batcher for stateful models, else
        the dynamic batcher (batches of one request when the model does not batch)."""
        assert mv.loaded is not None
        if mv.spec.sequence is not None:
            return SequenceBatcher(mv.spec, mv.loaded.instances, mv.stats)
        return DynamicBatcher(mv.spec, mv.loaded.instances, mv.stats, self._inline_execution_us)

    def _failed(
        self,
        name: str,
        exc: BaseException | None,
        failed: dict[int, str],
        created: list[ModelVersion] | None = None,
    ) -> None:
        """Record a failed load: what serves stays; the reason shows in the index."""
        if exc is not None:
            self._log_failure(name, exc)
        reason = self._reason(exc) if exc is not None else ""
        old = self.registry.get(name)
        if old is not None and old.default is not None:
            errors = dict(failed) or {v: reason for v, mv in old.versions.items() if mv.ready}
            self.registry.publish(
                ModelEntry.of(
                    name,
                    old.versions,
                    old.reason,
                    {**old.load_errors, **errors},
                    old.traffic,
                    old.router,
                )
            )
            return
        versions = {mv.version: mv for mv in created or []}
        summary = reason or "; ".join(f"version {v}: {r}" for v, r in sorted(failed.items()))
        self.registry.publish(ModelEntry.of(name, versions, summary, failed))

    def _log_failure(self, name: str, exc: BaseException, version: int | None = None) -> None:
        self.stats.loads["failure"] += 1
        what = f"model '{name}'" + (f" version {version}" if version is not None else "")
        if isinstance(exc, VolleyError):
            log.error("%s failed to load: %s", what, exc.message)
        else:
            log.error("%s failed to load", what, exc_info=exc)

    async def _load_version(self, mv: ModelVersion, path: Path, model_dir: Path) -> None:
        if mv.spec.ensemble is not None:
            # no instances and no memory of its own; composing models resolve per request
            mv.loaded = LoadedModel(instances=[])
            ensemble = await self._off_loop(EnsembleScheduler, mv.spec, path, self.registry)
            ensemble.start()
            mv.scheduler, mv.state = ensemble, ModelState.READY
            return
        backend = get_backend(mv.spec.backend)
        if mv.spec.parameters.get("volley.pinned", "").lower() == "true":
            self.pinned.add(mv.name)
        memory = self.memory
        kind = mv.spec.instance_kind
        device_id = mv.spec.gpus[0] if kind == "GPU" and mv.spec.gpus else 0
        device = device_name(kind, device_id)
        # Loads of one device are serialised so that each measures only its own footprint:
        # the device's memory in use before and after (host: resident set; GPU: the driver's).
        async with self._device_lock(device):
            known = memory.footprint(mv.name, mv.version) if memory is not None else None
            on_demand = mv.name in self._wanted
            reserved = 0
            if memory is not None and known is not None:
                # A known footprint is admitted (and reserved) before the load starts, with
                # room for the load's transient copy of the weights (held until it returns).
                peak = min(known * _LOAD_PEAK_FACTOR, memory.budgets.get(device, 0) or known)
                await memory.admit(
                    mv.name, device, max(peak, known), self._usage, self._evict, self._admit_wait_s
                )
                memory.record(mv.name, mv.version, device, max(peak, known), on_demand=on_demand)
                reserved = max(peak, known)
            # The device's memory in use before and after, freed memory handed back first (so
            # transient buffers of the load are not counted).
            probe = self._probes.for_device(device)
            await self._off_loop(probe.settle, device)
            before = probe.used_bytes(device)
            mv.loaded = await self._off_loop(backend.load, mv.spec, path)
            await self._off_loop(probe.settle, device)
            measured = max(probe.used_bytes(device) - before, 0)
            mv.loaded.memory_bytes[(kind, device_id)] = measured
            if mv.spec.config.model_warmup:
                try:
                    await self._off_loop(run_warmup, mv.spec, mv.loaded.instances, model_dir)
                except VolleyError:
                    raise
                except Exception as exc:
                    raise ConfigError(
                        f"model '{mv.name}' version {mv.version} failed warmup: {exc}"
                    ) from exc
            size = mv.loaded.memory_bytes.get((kind, device_id), 0)
            if memory is not None:
                if size > reserved:
                    # Never loaded before, or larger than last time: what it holds beyond its
                    # reservation is admitted now (evicting others), else it is unloaded again.
                    try:
                        await memory.admit(
                            mv.name,
                            device,
                            size - reserved,
                            self._usage,
                            self._evict,
                            self._admit_wait_s,
                        )
                    except ResourceExhausted:
                        memory.release(mv.name, mv.version)
                        raise
                memory.record(mv.name, mv.version, device, size, on_demand=on_demand)
        log.info(
            "model '%s' version %d holds %s on %s", mv.name, mv.version, format_bytes(size), device
        )
        mv.stats.memory_bytes.update(mv.loaded.memory_bytes)
        mv.cacheable = _cacheable(mv)
        if mv.spec.config.response_cache.enable and not mv.cacheable:
            log.warning(
                "model '%s' version %d asks for the response cache but is non-deterministic "
                "(volley.nondeterministic or a random-number operator): not cached",
                mv.name,
                mv.version,
            )
        if self._monitoring is not None:
            mv.monitor = ModelMonitor(
                mv.name, mv.version, self._monitoring, model_dir / "reference.npz"
            )
        batcher = self._scheduler(mv)
        batcher.start()
        mv.scheduler = batcher
        mv.state = ModelState.READY

    # -- unload --------------------------------------------------------------------------------
    async def unload(self, name: str) -> None:
        """Stop serving ``name``; accepted requests finish first. Finishes if cancelled."""
        await asyncio.shield(asyncio.ensure_future(self._unload(name, forget=False)))

    async def remove(self, name: str) -> None:
        """Unload ``name`` and forget it (its directory is gone)."""
        await asyncio.shield(asyncio.ensure_future(self._unload(name, forget=True)))

    async def _unload(self, name: str, *, forget: bool) -> None:
        async with self._lock(name):
            if not await self._take_down(name, "unloaded", evicted=False):
                return
            if forget:
                self.registry.forget(name)
                self.attempted.pop(name, None)
            self.stats.unloads += 1

    async def _take_down(self, name: str, reason: str, *, evicted: bool) -> bool:
        """Stop serving every version of ``name`` (holding its lock): no new requests, the
        accepted ones answered, then released. False when the model is unknown."""
        entry = self.registry.get(name)
        if entry is None:
            return False
        for mv in entry.versions.values():
            # marked at once: a request for an evicted model waits for it to load again
            mv.evicted = evicted
            if mv.state is ModelState.READY:
                mv.state = ModelState.UNLOADING
        traffic, router = entry.traffic, entry.router
        self.registry.publish(ModelEntry.of(name, entry.versions, traffic=traffic, router=router))
        for mv in entry.versions.values():
            await self._drain_and_release(mv)
            mv.reason, mv.unloaded = reason, True
        self.registry.publish(ModelEntry.of(name, entry.versions, traffic=traffic, router=router))
        return True

    async def _drain(self, mv: ModelVersion) -> None:
        if mv.scheduler is None:
            return
        if not await mv.scheduler.drain(self._drain_timeout_s):
            log.warning(
                "model '%s' version %d: requests still queued after %.0fs of draining fail",
                mv.name,
                mv.version,
                self._drain_timeout_s,
            )
        await mv.scheduler.stop()
        mv.scheduler = None

    async def _drain_and_release(self, mv: ModelVersion) -> None:
        mv.state = ModelState.UNLOADING
        await self._drain(mv)
        await self._release(mv)
        mv.state = ModelState.UNAVAILABLE

    async def _release(self, mv: ModelVersion) -> None:
        if mv.scheduler is not None:
            await mv.scheduler.stop()
            mv.scheduler = None
        if mv.loaded is not None:
            if self.memory is not None:
                self.memory.release(mv.name, mv.version)
            loaded, mv.loaded = mv.loaded, None
            await self._off_loop(loaded.close)
            del loaded
            await self._off_loop(host.trim)

    # -- memory: eviction and loading on demand ------------------------------------------------
    def _device_lock(self, device: str) -> asyncio.Lock:
        lock = self._device_locks.get(device)
        if lock is None:
            lock = self._device_locks[device] = asyncio.Lock()
        return lock

    def _usage(self, name: str) -> Usage:
        entry = self.registry.get(name)
        versions = list(entry.versions.values()) if entry is not None else []
        return Usage(
            last_used_ms=max((mv.stats.last_inference_ms for mv in versions), default=0),
            served=sum(mv.stats.success.count + mv.stats.fail.count for mv in versions),
            busy=name in self._loading
            or any(mv.scheduler is not None and mv.scheduler.pending for mv in versions),
            pinned=name in self.pinned,
        )

    async def _evict(self, name: str) -> None:
        """Unload an idle model to make room; it stays listed, UNAVAILABLE ("evicted")."""
        async with self._lock(name):
            log.info("evicting model '%s' (least recently used) to make room", name)
            if await self._take_down(name, "evicted", evicted=True):
                self.stats.evictions += 1

    async def ensure_loaded(self, name: str, timeout_s: float) -> None:
        """Load an evicted model again for a waiting request: one load, however many wait."""
        task = self._on_demand.get(name)
        if task is None or task.done():
            self._wanted.add(name)
            task = asyncio.ensure_future(self.load(name))
            task.add_done_callback(lambda _: self._wanted.discard(name))
            self._on_demand[name] = task
            self.stats.on_demand_loads += 1
        started = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        finally:
            self.stats.on_demand_wait_ns += int((time.monotonic() - started) * 1e9)

    async def shutdown(self) -> None:
        """Unload every model, then release the load threads."""
        for entry in self.registry.entries():
            await self.unload(entry.name)
        self._executor.shutdown(wait=False)
