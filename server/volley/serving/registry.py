"""Which model versions exist and their state; read on every request without locks.

Writers replace whole ``ModelEntry`` snapshots, so a reader's plain dict lookup always sees
a consistent entry (copy-on-write).
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from volley.backends.base import LoadedModel
from volley.errors import InvalidArgument, NotFound, Unavailable
from volley.model.spec import ModelSpec
from volley.repository.traffic import TrafficPolicy
from volley.scheduler.base import Scheduler
from volley.serving.traffic import Router
from volley.telemetry.stats import ModelStats

#: Numbers every loaded version apart (a reload of the same version gets a new one).
_load_ids = itertools.count(1)

if TYPE_CHECKING:
    from volley.serving.monitor import ModelMonitor


class ModelState(enum.Enum):
    """Lifecycle state of a model version, named as the protocol reports them."""

    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(eq=False)
class ModelVersion:
    """One version of a model: its spec, instances, scheduler and statistics."""

    name: str
    version: int
    spec: ModelSpec
    state: ModelState = ModelState.LOADING
    reason: str = ""
    #: True once unloaded on purpose (not a failure: readiness ignores it).
    unloaded: bool = False
    #: True when unloaded to make room; a request for it loads it again.
    evicted: bool = False
    #: Drift and outlier monitoring of its inputs, when enabled.
    monitor: ModelMonitor | None = None
    loaded: LoadedModel | None = None
    scheduler: Scheduler | None = None
    #: The version folder's files when it was loaded (path, size, mtime).
    files: tuple[tuple[str, int, int], ...] = ()
    #: The effective configuration it was loaded with, serialized.
    config_bytes: bytes = b""
    #: True when the response cache may answer for it (enabled and deterministic).
    cacheable: bool = False
    stats: ModelStats = field(init=False)
    version_str: str = field(init=False)
    load_id: int = field(init=False)

    def __post_init__(self) -> None:
        self.stats = ModelStats(self.name, self.version)
        self.version_str = str(self.version)
        self.load_id = next(_load_ids)

    @property
    def ready(self) -> bool:
        """True while the version serves requests."""
        return self.state is ModelState.READY


@dataclass(frozen=True)
class ModelEntry:
    """Immutable snapshot of a model's versions."""

    name: str
    versions: dict[int, ModelVersion]
    #: Highest READY version (what a request without a version gets), if any.
    default: ModelVersion | None
    #: Why the model has no versions at all (e.g. a broken config); empty otherwise.
    reason: str = ""
    #: Versions whose last load failed while others kept serving: version -> reason.
    load_errors: dict[int, str] = field(default_factory=dict)
    #: The release policy (labels, split, sticky, shadow) and its request-path router.
    traffic: TrafficPolicy | None = None
    router: Router | None = None

    @classmethod
    def of(
        cls,
        name: str,
        versions: dict[int, ModelVersion],
        reason: str = "",
        load_errors: dict[int, str] | None = None,
        traffic: TrafficPolicy | None = None,
        router: Router | None = None,
    ) -> ModelEntry:
        """A snapshot of ``versions``; the default is the highest READY one. ``router`` is
        kept when it serves ``traffic`` already (its sampling state carries on)."""
        ready = [v for n, v in sorted(versions.items()) if v.ready]
        if traffic is not None and (router is None or router.policy != traffic):
            router = Router(traffic)
        if traffic is None:
            router = None
        return cls(
            name,
            dict(versions),
            ready[-1] if ready else None,
            reason,
            load_errors or {},
            traffic,
            router,
        )

    def version_number(self, version: str) -> int:
        """A request's version string (a number or one of the model's labels) as a number."""
        traffic = self.traffic
        if traffic is not None and version in traffic.labels:
            return traffic.labels[version]
        if traffic is not None and traffic.labels and not version.isdigit():
            labels = ", ".join(sorted(traffic.labels))
            raise NotFound(f"'{self.name}' has no version or label '{version}' (labels: {labels})")
        return parse_request_version(version)

    @property
    def evicted(self) -> bool:
        """True when the model was evicted to make room (and may be loaded on demand)."""
        return bool(self.versions) and all(mv.evicted for mv in self.versions.values())

    @property
    def failed(self) -> bool:
        """True when the model could not be loaded at all (no versions, a reason)."""
        return not self.versions and bool(self.reason)


class Registry:
    """Model name -> ``ModelEntry``; the one place requests resolve models."""

    def __init__(self) -> None:
        self._models: dict[str, ModelEntry] = {}

    def publish(self, entry: ModelEntry) -> None:
        """Atomically replace a model's entry."""
        self._models[entry.name] = entry

    def forget(self, name: str) -> None:
        """Drop a model's entry (its directory is gone)."""
        self._models.pop(name, None)

    def get(self, name: str) -> ModelEntry | None:
        """The entry of ``name``, if the model was ever loaded or tried."""
        return self._models.get(name)

    def entries(self) -> list[ModelEntry]:
        """Every entry, sorted by model name."""
        return [self._models[k] for k in sorted(self._models)]

    def resolve(self, name: str, version: str) -> ModelVersion:
        """The READY version a request for ``(name, version)`` runs on, or the protocol's error."""
        entry = self._models.get(name)
        if entry is None:
            raise NotFound(f"Request for unknown model: '{name}' is not found")
        return self._ready(entry, name, version)

    def _ready(self, entry: ModelEntry, name: str, version: str) -> ModelVersion:
        if not version:
            if entry.default is None:
                raise NotFound(f"'{name}' has no available versions")
            return entry.default
        mv = entry.versions.get(entry.version_number(version))
        if mv is None:
            raise NotFound(f"'{name}' version {version} is not found")
        if not mv.ready:
            raise Unavailable(f"'{name}' version {version} is not at ready state")
        return mv

    def route(
        self, name: str, version: str, parameters: Mapping[str, object] | None
    ) -> tuple[ModelVersion, ModelEntry]:
        """``resolve``, except that a request naming no version follows the model's split; the
        entry comes along (its router decides shadow copies)."""
        entry = self._models.get(name)
        if entry is None:
            raise NotFound(f"Request for unknown model: '{name}' is not found")
        if not version and entry.router is not None:
            mv = entry.router.pick(entry, parameters)
            if mv is not None:
                return mv, entry
        return self._ready(entry, name, version), entry

    def lookup(self, name: str, version: str) -> ModelVersion:
        """Like ``resolve`` but also returns versions that are not READY."""
        entry = self._models.get(name)
        if entry is None:
            raise NotFound(f"Request for unknown model: '{name}' is not found")
        if not version:
            if entry.default is not None:
                return entry.default
            if entry.versions:
                return entry.versions[max(entry.versions)]
            raise NotFound(f"'{name}' has no available versions")
        mv = entry.versions.get(entry.version_number(version))
        if mv is None:
            raise NotFound(f"'{name}' version {version} is not found")
        return mv


def parse_request_version(text: str) -> int:
    """A request's version string as an int; anything but ASCII digits is invalid."""
    if not (text.isascii() and text.isdigit()):
        raise InvalidArgument(
            f"failed to get model version from specified version string '{text}' "
            "(it must be a non-negative integer)"
        )
    return int(text)
