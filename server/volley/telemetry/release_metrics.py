"""Metric families of releases: shadow comparisons per version pair, and the response cache."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import Metric

from volley.telemetry.stats import DIFF_BOUNDS, ShadowStats


@dataclass(slots=True)
class CacheSnapshot:
    """The response cache at scrape time (all models)."""

    capacity: int
    bytes: int
    entries: int
    evictions: int


@dataclass(slots=True)
class ReleaseSnapshot:
    """Shadow comparisons and the cache, read when Prometheus scrapes."""

    shadows: Iterable[ShadowStats] = field(default_factory=list)
    cache: CacheSnapshot | None = None


def release_families(snapshot: ReleaseSnapshot) -> Iterator[Metric]:
    """``volley_shadow_*`` and ``volley_cache_*`` families."""
    requests = Metric("volley_shadow_requests", "Shadow copies, by what became of them", "counter")
    diff = Metric(
        "volley_shadow_max_abs_diff",
        "Largest absolute difference between shadow and primary outputs, per request",
        "histogram",
    )
    agree = Metric(
        "volley_shadow_top1_agreement",
        "Classifier rows on which shadow and primary agree on the top class",
        "counter",
    )
    rows = Metric(
        "volley_shadow_top1_rows", "Classifier rows compared between shadow and primary", "counter"
    )
    for s in snapshot.shadows:
        labels = {"model": s.model, "primary": str(s.primary), "shadow": str(s.shadow)}
        outcomes = {
            "sent": s.sent,
            "compared": s.compared,
            "dropped": s.dropped,
            "failed": s.failed,
            "mismatched": s.mismatched,
        }
        for result, count in outcomes.items():
            requests.add_sample(requests.name + "_total", {**labels, "result": result}, count)
        running = 0
        for bound, count in zip(DIFF_BOUNDS, s.diff_counts, strict=False):
            running += count
            diff.add_sample(diff.name + "_bucket", {**labels, "le": repr(bound)}, running)
        total = sum(s.diff_counts)
        diff.add_sample(diff.name + "_bucket", {**labels, "le": "+Inf"}, total)
        diff.add_sample(diff.name + "_count", labels, total)
        diff.add_sample(diff.name + "_sum", labels, s.diff_sum)
        agree.add_sample(agree.name + "_total", labels, s.top1_agree)
        rows.add_sample(rows.name + "_total", labels, s.top1_rows)
    yield from (requests, diff, agree, rows)
    cache = snapshot.cache
    if cache is not None:
        size = Metric("volley_cache_bytes", "Bytes held by the response cache", "gauge")
        size.add_sample(size.name, {}, cache.bytes)
        capacity = Metric("volley_cache_capacity_bytes", "Response cache size limit", "gauge")
        capacity.add_sample(capacity.name, {}, cache.capacity)
        entries = Metric("volley_cache_entries", "Responses held by the cache", "gauge")
        entries.add_sample(entries.name, {}, cache.entries)
        evicted = Metric(
            "volley_cache_evictions", "Responses evicted from the cache to make room", "counter"
        )
        evicted.add_sample(evicted.name + "_total", {}, cache.evictions)
        yield from (size, capacity, entries, evicted)
