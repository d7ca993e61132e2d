"""Live figures for GET /v1/status, read from each service's own Prometheus ``/metrics``.

Request rate is the growth of ``quarry_http_requests_total`` between two scrapes this process
keeps in memory; latency quantiles are estimated from ``quarry_http_request_duration_seconds``
buckets, as PromQL's ``histogram_quantile`` does (linear inside a bucket). Probes of
``/metrics`` and ``/health/*`` are left out of both: the status page itself makes them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "quarry_http_requests"  # the parser names a counter's family without "_total"
LATENCY = "quarry_http_request_duration_seconds"
CACHE_LOOKUPS = "quarry_rag_cache_lookups"
DEGRADED_ANSWERS = "quarry_rag_degraded_answers"
# Routes the status page's own probes hit: counting them would show the page watching itself.
PROBE_ROUTES = frozenset({"/metrics", "/health/live", "/health/ready"})
# A baseline is replaced once it is this old, so that a page refreshed by several people
# still measures a rate over a few seconds, not over the milliseconds between two of them.
BASELINE_MAX_AGE_S = 5.0
# Under this, two scrapes are too close for a rate that means anything.
MIN_WINDOW_S = 0.5


@dataclass
class Snapshot:
    """What one scrape of a service says, reduced to the totals the figures need."""

    at: float
    requests: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count
    cache: dict[str, float] | None = None  # result -> lookups; None: the service has no cache
    degraded: float | None = None
    queue_depth: float | None = None


def parse_snapshot(text: str, service: str, at: float) -> Snapshot:
    """Reads one ``/metrics`` body; HTTP metrics are kept for ``service``'s label only."""
    snap = Snapshot(at=at)
    queue_depth = f"quarry_{service}_queue_depth"
    for family in text_string_to_metric_families(text):
        # A labelled counter nothing has counted yet has no samples, only its family.
        if family.name == CACHE_LOOKUPS and snap.cache is None:
            snap.cache = {}
        if family.name == DEGRADED_ANSWERS and snap.degraded is None:
            snap.degraded = 0.0
        for sample in family.samples:
            labels = sample.labels
            if family.name in (REQUESTS, LATENCY):
                if labels.get("service") != service or labels.get("route") in PROBE_ROUTES:
                    continue
                if family.name == REQUESTS and sample.name == f"{REQUESTS}_total":
                    snap.requests += sample.value
                elif family.name == LATENCY and sample.name == f"{LATENCY}_bucket":
                    bound = float(labels["le"])
                    snap.buckets[bound] = snap.buckets.get(bound, 0.0) + sample.value
            elif snap.cache is not None and sample.name == f"{CACHE_LOOKUPS}_total":
                result = labels.get("result", "")
                snap.cache[result] = snap.cache.get(result, 0.0) + sample.value
            elif snap.degraded is not None and sample.name == f"{DEGRADED_ANSWERS}_total":
                snap.degraded += sample.value
            elif family.name == queue_depth and sample.name == queue_depth:
                snap.queue_depth = sample.value
    return snap


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of cumulative ``(upper bound, count)`` buckets, ``+Inf`` included.

    Linear inside the bucket the rank falls in, from 0 for the first bucket; a rank in the
    ``+Inf`` bucket gives the highest finite bound (as PromQL does). None with no observations.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank and count > lower_count:
            if math.isinf(bound):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def figures(current: Snapshot, previous: Snapshot | None) -> dict[str, Any]:
    """The figures one service shows: since ``previous`` where there is one, totals otherwise."""
    window: float | None = None
    rate: float | None = None
    buckets = current.buckets
    # A restarted service starts its counters again: its old baseline measures nothing.
    if (
        previous is not None
        and current.at - previous.at >= MIN_WINDOW_S
        and current.requests >= previous.requests
    ):
        window = current.at - previous.at
        rate = (current.requests - previous.requests) / window
        delta = {b: c - previous.buckets.get(b, 0.0) for b, c in current.buckets.items()}
        if max(delta.values(), default=0.0) > 0:  # no request in the window: keep the totals
            buckets = delta
    out: dict[str, Any] = {
        "requests_total": int(current.requests),
        "requests_per_s": _round(rate),
        "window_s": _round(window, 2),
        "latency_p50_s": _round(histogram_quantile(0.5, buckets.items()), 6),
        "latency_p99_s": _round(histogram_quantile(0.99, buckets.items()), 6),
        "latency_over": "window" if buckets is not current.buckets else "lifetime",
    }
    if current.cache is not None:
        lookups = sum(current.cache.values())
        out["cache_lookups_total"] = int(lookups)
        out["cache_hit_rate"] = _round(current.cache.get("hit", 0.0) / lookups) if lookups else None
    if current.degraded is not None:
        out["degraded_answers_total"] = int(current.degraded)
    if current.queue_depth is not None:
        # NaN: the service could not read its queue (ingest's lives in Redis).
        out["queue_depth"] = int(current.queue_depth) if math.isfinite(current.queue_depth) else None
    return out


class FigureKeeper:
    """Keeps each service's baseline scrape in memory (per gateway process) for rates."""

    def __init__(self) -> None:
        self._baselines: dict[str, Snapshot] = {}

    def update(self, service: str, text: str, at: float | None = None) -> dict[str, Any]:
        current = parse_snapshot(text, service, time.monotonic() if at is None else at)
        previous = self._baselines.get(service)
        if (
            previous is None
            or current.at - previous.at >= BASELINE_MAX_AGE_S
            or current.requests < previous.requests
        ):
            self._baselines[service] = current
        return figures(current, previous)
