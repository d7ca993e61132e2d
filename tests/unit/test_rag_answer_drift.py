"""The retrieval-drift tracker: rolling mean of top-1 scores against a slow baseline."""

from __future__ import annotations

import pytest

from services.rag.rag_metrics import TOP1_DRIFT, DriftTracker


def test_no_drift_before_a_baseline_exists() -> None:
    tracker = DriftTracker(window=4)
    for score in (0.9, 0.1, 0.5):
        tracker.observe(score)
    assert tracker.baseline is None
    assert tracker.drift == 0.0


def test_drop_in_scores_shows_as_negative_drift() -> None:
    tracker = DriftTracker(window=10, alpha=0.001)
    for _ in range(10):
        tracker.observe(0.8)
    assert tracker.baseline == pytest.approx(0.8)
    for _ in range(10):
        tracker.observe(0.4)
    assert tracker.recent == pytest.approx(0.4)
    assert tracker.baseline is not None
    assert tracker.drift == pytest.approx((0.4 - tracker.baseline) / tracker.baseline)
    assert tracker.drift < -0.45
    assert TOP1_DRIFT._value.get() == pytest.approx(tracker.drift)


def test_baseline_follows_slowly() -> None:
    tracker = DriftTracker(window=2, alpha=0.5)
    tracker.observe(1.0)
    tracker.observe(1.0)
    tracker.observe(0.0)
    assert tracker.baseline == pytest.approx(0.5)
