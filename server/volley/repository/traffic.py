"""A model's release policy: ``<model>/traffic.yaml`` (labels, split, sticky key, shadow).

```yaml
labels: {stable: 3, canary: 4}       # a request may name a label wherever it names a version
split: {3: 90, 4: 10}                 # requests naming no version, by weight
sticky: request_parameter:user_id     # the same key always lands on the same version
shadow: {version: 5, percent: 100}    # copies of served requests, compared, never returned
```

Every version the policy names must exist in the repository; the loader serves them whatever
the version policy selects. Parsing is strict: unknown keys, bad labels and weights are
``ConfigError`` naming the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from volley.errors import ConfigError
from volley.repository.config_io import safe_yaml

TRAFFIC_FILE = "traffic.yaml"
MAX_TRAFFIC_BYTES = 64 * 1024
_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_HINT = "see README: Releases (labels, split, sticky, shadow)"


@dataclass(frozen=True)
class Shadow:
    """Copies of served requests go to ``version`` for ``percent`` % of requests."""

    version: int
    percent: float


@dataclass(frozen=True)
class TrafficPolicy:
    """A validated traffic file."""

    labels: dict[str, int] = field(default_factory=dict)
    #: (version, weight) pairs, ascending by version; empty: no split.
    split: tuple[tuple[int, float], ...] = ()
    #: The request parameter whose value pins a caller to one version (sticky split).
    sticky_parameter: str = ""
    shadow: Shadow | None = None

    def versions(self) -> set[int]:
        """Every version the policy names."""
        named = set(self.labels.values()) | {v for v, _ in self.split}
        if self.shadow is not None:
            named.add(self.shadow.version)
        return named

    def describe(self) -> dict[str, Any]:
        """The policy as the traffic file spells it."""
        doc: dict[str, Any] = {}
        if self.labels:
            doc["labels"] = dict(self.labels)
        if self.split:
            doc["split"] = {str(v): w for v, w in self.split}
        if self.sticky_parameter:
            doc["sticky"] = f"request_parameter:{self.sticky_parameter}"
        if self.shadow is not None:
            doc["shadow"] = {"version": self.shadow.version, "percent": self.shadow.percent}
        return doc


def _version(value: Any, what: str, path: str) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if type(value) is not int or value < 1:
        raise ConfigError(f"{what}: expected a version number >= 1, got {value!r}", path=path)
    return value


def _number(value: Any, what: str, path: str) -> float:
    if type(value) not in (int, float) or value != value:
        raise ConfigError(f"{what}: expected a number, got {value!r}", path=path)
    return float(value)


def parse_traffic(doc: Any, *, path: str) -> TrafficPolicy:
    """Validate a traffic document (already parsed from YAML or JSON)."""
    if doc is None:
        return TrafficPolicy()
    if type(doc) is not dict:
        raise ConfigError("a traffic file is a mapping", path=path, hint=_HINT)
    unknown = set(doc) - {"labels", "split", "sticky", "shadow"}
    if unknown:
        raise ConfigError(
            f"unknown traffic key(s) {sorted(map(str, unknown))}: expected labels, split, "
            "sticky, shadow",
            path=path,
            hint=_HINT,
        )
    labels: dict[str, int] = {}
    raw_labels = doc.get("labels") or {}
    if type(raw_labels) is not dict:
        raise ConfigError("'labels' maps label names to versions", path=path, hint=_HINT)
    for name, version in raw_labels.items():
        if type(name) is not str or not _LABEL.fullmatch(name):
            raise ConfigError(
                f"label {name!r}: a label starts with a letter and holds letters, digits, "
                "'_', '.', '-' (at most 64)",
                path=path,
            )
        labels[name] = _version(version, f"label '{name}'", path)
    split: list[tuple[int, float]] = []
    raw_split = doc.get("split") or {}
    if type(raw_split) is not dict:
        raise ConfigError("'split' maps versions to weights", path=path, hint=_HINT)
    for version, weight in raw_split.items():
        v = _version(version, "split", path)
        w = _number(weight, f"split weight of version {v}", path)
        if w < 0:
            raise ConfigError(f"split weight of version {v} is negative", path=path)
        split.append((v, w))
    if split and sum(w for _, w in split) <= 0:
        raise ConfigError("split weights add up to 0", path=path, hint=_HINT)
    sticky = doc.get("sticky") or ""
    parameter = ""
    if sticky:
        if type(sticky) is not str or not sticky.startswith("request_parameter:"):
            raise ConfigError(
                f"sticky {sticky!r}: expected 'request_parameter:NAME'", path=path, hint=_HINT
            )
        parameter = sticky.removeprefix("request_parameter:")
        if not parameter:
            raise ConfigError("sticky names no request parameter", path=path, hint=_HINT)
        if not split:
            raise ConfigError("sticky needs a split to choose from", path=path, hint=_HINT)
    shadow = None
    raw_shadow = doc.get("shadow")
    if raw_shadow is not None:
        if type(raw_shadow) is not dict or set(raw_shadow) - {"version", "percent"}:
            raise ConfigError("'shadow' is {version: N, percent: P}", path=path, hint=_HINT)
        version = _version(raw_shadow.get("version"), "shadow", path)
        percent = _number(raw_shadow.get("percent", 100), "shadow percent", path)
        if not 0 < percent <= 100:
            raise ConfigError(f"shadow percent {percent} is not in (0, 100]", path=path)
        shadow = Shadow(version, percent)
    return TrafficPolicy(labels, tuple(sorted(split)), parameter, shadow)


def read_traffic(model_dir: Path) -> TrafficPolicy | None:
    """The model's ``traffic.yaml``, or None when it has none."""
    path = model_dir / TRAFFIC_FILE
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > MAX_TRAFFIC_BYTES:
            raise ConfigError(
                f"traffic file is larger than {MAX_TRAFFIC_BYTES // 1024} KiB", path=str(path)
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read traffic file: {exc}", path=str(path)) from exc
    return parse_traffic(safe_yaml(text, path=str(path)), path=str(path))


def check_versions(policy: TrafficPolicy, available: set[int], path: str) -> None:
    """Every version the policy names exists."""
    missing = sorted(policy.versions() - available)
    if missing:
        have = ", ".join(str(v) for v in sorted(available))
        raise ConfigError(
            f"traffic names version(s) {missing}, which the repository does not hold "
            f"(available: {have})",
            path=path,
            hint="add the version folders first, or fix the traffic file",
        )
