"""Weighted reciprocal-rank fusion."""

from __future__ import annotations

import pytest

from services.rag.retrieval.fusion import weighted_rrf, weighted_score_fusion


def test_plain_rrf_rewards_agreement() -> None:
    fused = weighted_rrf([(["a", "b", "c"], 1.0), (["b", "d", "a"], 1.0)], k=60, limit=10)
    assert [item for item, _ in fused] == ["b", "a", "d", "c"]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)


def test_weights_let_one_list_dominate() -> None:
    fused = weighted_rrf([(["a", "b"], 1.0), (["b", "a"], 3.0)], k=10, limit=2)
    assert [item for item, _ in fused] == ["b", "a"]


def test_small_k_favours_top_ranks() -> None:
    lists = [(["a", "x", "y"], 1.0), (["z", "b", "a"], 1.0)]
    # a: ranks 1 and 3; b: rank 2 only. Both k values keep a first, but the margin differs.
    small = dict(weighted_rrf(lists, k=1, limit=5))
    large = dict(weighted_rrf(lists, k=1000, limit=5))
    assert small["a"] / small["b"] > large["a"] / large["b"]


def test_limit_key_and_deterministic_ties() -> None:
    items = [{"id": "p"}, {"id": "q"}]
    fused = weighted_rrf([(items, 1.0)], k=1, limit=1, key=lambda d: d["id"])
    assert fused == [({"id": "p"}, 0.5)]
    tied = weighted_rrf([(["a"], 1.0), (["b"], 1.0)], k=5, limit=5)
    assert [item for item, _ in tied] == ["a", "b"]


def test_score_fusion_normalises_each_list_by_its_best() -> None:
    # Cosine-like scores and BM25-like scores on very different scales.
    dense = (["a", "b"], [0.8, 0.4], 0.5)
    bm25 = (["b", "c"], [20.0, 10.0], 0.5)
    fused = dict(weighted_score_fusion([dense, bm25], limit=10))
    # a: dense 1.0, missing from BM25 -> that list's floor 0.5. b: 0.5 and 1.0. c: dense floor 0.5, 0.5.
    assert fused == pytest.approx({"a": 0.75, "b": 0.75, "c": 0.5})


def test_score_fusion_keeps_score_gaps_that_rrf_discards() -> None:
    # Dense barely prefers x; BM25 strongly prefers y: score fusion follows the big gap, RRF ties.
    dense = (["x", "y"], [0.81, 0.80])
    bm25 = (["y", "x"], [30.0, 3.0])
    fused = weighted_score_fusion([(*dense, 0.5), (*bm25, 0.5)], limit=2)
    assert [item for item, _ in fused] == ["y", "x"]
    rrf = weighted_rrf([(dense[0], 1.0), (bm25[0], 1.0)], k=5, limit=2)
    assert rrf[0][1] == pytest.approx(rrf[1][1])


def test_score_fusion_weights_and_limit() -> None:
    fused = weighted_score_fusion([(["a"], [1.0], 0.9), (["b"], [5.0], 0.1)], limit=1)
    assert [item for item, _ in fused] == ["a"]
    assert weighted_score_fusion([([], [], 1.0)], limit=3) == []
