"""Weighted reciprocal-rank fusion of ranked lists.

Plain RRF scores an item ``sum 1 / (k + rank)``; weighting each list lets a stronger
retriever count for more, and ``k`` sets how fast credit falls off with rank.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

T = TypeVar("T")


def weighted_rrf(
    rankings: Sequence[tuple[Sequence[T], float]],
    k: float,
    limit: int,
    key: Callable[[T], Hashable] = lambda item: item,
) -> list[tuple[T, float]]:
    """Fused ``(item, score)`` best first; ``rankings`` are ``(best-first items, weight)``.

    Ties keep the order in which items were first seen, so results are deterministic.
    """
    scores: dict[Hashable, float] = {}
    first: dict[Hashable, T] = {}
    for items, weight in rankings:
        for rank, item in enumerate(items, start=1):
            ident = key(item)
            first.setdefault(ident, item)
            scores[ident] = scores.get(ident, 0.0) + weight / (k + rank)
    order = sorted(scores, key=lambda ident: -scores[ident])  # stable: ties stay in first-seen order
    return [(first[ident], scores[ident]) for ident in order[:limit]]


def weighted_score_fusion(
    rankings: Sequence[tuple[Sequence[T], Sequence[float], float]],
    limit: int,
    key: Callable[[T], Hashable] = lambda item: item,
) -> list[tuple[T, float]]:
    """Fused ``(item, score)`` from ``(best-first items, their scores, weight)`` lists.

    Each list's scores are divided by its best score, so cosine similarities and BM25
    scores share a 0..1 scale; an item missing from a list gets that list's lowest
    normalised score (it ranked below the cut-off). Unlike RRF this keeps how far apart
    the scores were, which won on SciFact train (see docs/benchmarks.md).
    """
    normalised: list[tuple[dict[Hashable, float], float, float]] = []
    first: dict[Hashable, T] = {}
    for items, scores, weight in rankings:
        best = max(scores, default=0.0)
        scale = 1.0 / best if best > 0 else 1.0
        values: dict[Hashable, float] = {}
        for item, score in zip(items, scores, strict=True):
            ident = key(item)
            first.setdefault(ident, item)
            values.setdefault(ident, score * scale)
        floor = min(values.values(), default=0.0)
        normalised.append((values, floor, weight))
    fused = {
        ident: sum(weight * values.get(ident, floor) for values, floor, weight in normalised)
        for ident in first
    }
    order = sorted(fused, key=lambda ident: -fused[ident])  # stable: ties stay in first-seen order
    return [(first[ident], fused[ident]) for ident in order[:limit]]
