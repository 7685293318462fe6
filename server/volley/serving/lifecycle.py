"""Model lifecycle: load versions from the repository, serve them, unload them."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from volley.backends import BackendInspector, get_backend
from volley.backends.base import LoadedModel
from volley.backends.warmup import run_warmup
from volley.errors import ConfigError, VolleyError
from volley.repository import layout
from volley.repository.loader import load_model_config
from volley.scheduler.batcher import DynamicBatcher
from volley.serving.registry import ModelEntry, ModelState, ModelVersion, Registry
from volley.telemetry.stats import ServerStats

log = logging.getLogger("volley.serving")


def _failure_text(exc: BaseException) -> str:
    """What a failed load reports: the error's own message, or its kind when unexpected."""
    if isinstance(exc, VolleyError):
        return exc.message
    return f"unexpected {type(exc).__name__} while loading (see the server log)"


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
    ) -> None:
        self.repositories = repositories
        self.registry = registry
        self._auto_complete = auto_complete
        self._default_max_batch_size = default_max_batch_size
        self._gpu_count = gpu_count
        self._inline_execution_us = inline_execution_us
        self._inspector = BackendInspector()
        #: Server-wide counters: model loads and unloads here, refusals in the service.
        self.stats = ServerStats()
        self._lock = asyncio.Lock()

    def model_dirs(self) -> dict[str, Path | None]:
        """Every model directory by name; a name found in two repositories maps to None."""
        found: dict[str, Path | None] = {}
        for repo in self.repositories:
            for name, model_dir in layout.list_models(repo).items():
                found[name] = None if name in found else model_dir
        return found

    async def load(self, name: str) -> None:
        """Load (or reload) every version of ``name`` the version policy selects."""
        async with self._lock:
            dirs = self.model_dirs()
            if name not in dirs:
                raise ConfigError(f"failed to load '{name}': no such model in the repository")
            model_dir = dirs[name]
            if model_dir is None:
                reason = f"model '{name}' appears in more than one repository"
                self.registry.publish(ModelEntry.of(name, {}, reason))
                raise ConfigError(reason)
            try:
                loaded_cfg = await asyncio.to_thread(
                    load_model_config,
                    model_dir,
                    self._inspector.read_signature,
                    gpu_count=self._gpu_count,
                    default_max_batch_size=self._default_max_batch_size,
                    auto_complete=self._auto_complete,
                )
            except Exception as exc:
                self._log_failure(name, exc)
                old = self.registry.get(name)
                if old is None or old.default is None:
                    self.registry.publish(ModelEntry.of(name, {}, _failure_text(exc)))
                raise _as_volley_error(exc) from exc
            new_versions: dict[int, ModelVersion] = {}
            try:
                for version, path in sorted(loaded_cfg.versions.items()):
                    mv = ModelVersion(name, version, loaded_cfg.spec)
                    new_versions[version] = mv
                    await self._load_version(mv, path, model_dir)
            except Exception as exc:
                reason = _failure_text(exc)
                for mv in new_versions.values():
                    await self._release(mv)
                    mv.state, mv.reason = ModelState.UNAVAILABLE, reason
                old = self.registry.get(name)
                if old is None or old.default is None:
                    self.registry.publish(ModelEntry.of(name, new_versions, reason))
                self._log_failure(name, exc)
                raise _as_volley_error(exc) from exc
            old = self.registry.get(name)
            self.registry.publish(ModelEntry.of(name, new_versions))
            self.stats.loads["success"] += 1
            if old is not None:
                for mv in old.versions.values():
                    await self._drain_and_release(mv)
            log.info("model '%s' ready, versions %s", name, sorted(new_versions))

    def _log_failure(self, name: str, exc: BaseException) -> None:
        self.stats.loads["failure"] += 1
        if isinstance(exc, VolleyError):
            log.error("model '%s' failed to load: %s", name, exc.message)
        else:
            log.error("model '%s' failed to load", name, exc_info=exc)

    async def _load_version(self, mv: ModelVersion, path: Path, model_dir: Path) -> None:
        backend = get_backend(mv.spec.backend)
        loaded: LoadedModel = await asyncio.to_thread(backend.load, mv.spec, path)
        mv.loaded = loaded
        if mv.spec.config.model_warmup:
            try:
                await asyncio.to_thread(run_warmup, mv.spec, loaded.instances, model_dir)
            except VolleyError:
                raise
            except Exception as exc:
                raise ConfigError(
                    f"model '{mv.name}' version {mv.version} failed warmup: {exc}"
                ) from exc
        mv.stats.memory_bytes.update(loaded.memory_bytes)
        batcher = DynamicBatcher(mv.spec, loaded.instances, mv.stats, self._inline_execution_us)
        batcher.start()
        mv.scheduler = batcher
        mv.state = ModelState.READY

    async def unload(self, name: str) -> None:
        """Stop serving ``name``; in-flight requests finish first."""
        async with self._lock:
            entry = self.registry.get(name)
            if entry is None:
                return
            for mv in entry.versions.values():
                if mv.state is ModelState.READY:
                    mv.state = ModelState.UNLOADING
            self.registry.publish(ModelEntry.of(name, entry.versions))
            for mv in entry.versions.values():
                await self._drain_and_release(mv)
                mv.reason, mv.unloaded = "unloaded", True
            self.stats.unloads += 1
            self.registry.publish(ModelEntry.of(name, entry.versions))

    async def _drain_and_release(self, mv: ModelVersion) -> None:
        mv.state = ModelState.UNLOADING
        await self._release(mv)
        mv.state = ModelState.UNAVAILABLE

    async def _release(self, mv: ModelVersion) -> None:
        if mv.scheduler is not None:
            await mv.scheduler.stop()
            mv.scheduler = None
        if mv.loaded is not None:
            await asyncio.to_thread(mv.loaded.close)
            mv.loaded = None

    async def shutdown(self) -> None:
        """Unload every model."""
        for entry in self.registry.entries():
            await self.unload(entry.name)


def _as_volley_error(exc: BaseException) -> VolleyError:
    return exc if isinstance(exc, VolleyError) else ConfigError(_failure_text(exc))
