"""The figures GET /v1/status reads from /metrics: the quantile estimate, parsing and rates."""

from __future__ import annotations

import math

import pytest

from services.gateway.suite_figures import FigureKeeper, histogram_quantile

# 10 observations at most 0.1 s, 80 more by 0.5 s, 9 more by 1 s, and 1 beyond.
_BUCKETS = [(0.1, 10.0), (0.5, 90.0), (1.0, 99.0), (math.inf, 100.0)]


def test_quantiles_interpolate_inside_the_bucket_the_rank_falls_in() -> None:
    assert histogram_quantile(0.5, _BUCKETS) == pytest.approx(0.1 + 0.4 * 40 / 80)  # 0.3
    assert histogram_quantile(0.05, _BUCKETS) == pytest.approx(0.05)  # first bucket from 0
    assert histogram_quantile(0.99, _BUCKETS) == pytest.approx(1.0)
    assert histogram_quantile(0.995, _BUCKETS) == pytest.approx(1.0)  # +Inf: highest finite bound
    assert histogram_quantile(0.5, reversed(_BUCKETS)) == pytest.approx(0.3)  # order does not matter


def test_no_observations_give_no_quantile() -> None:
    assert histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None
    assert histogram_quantile(0.5, []) is None


_BUCKET = "quarry_http_request_duration_seconds_bucket"


def _metrics(requests: int, slow: int) -> str:
    return f"""# HELP quarry_http_requests_total HTTP requests served, by route and status.
# TYPE quarry_http_requests_total counter
quarry_http_requests_total{{service="rag",method="POST",route="/v1/query",status="200"}} {requests}
quarry_http_requests_total{{service="rag",method="GET",route="/metrics",status="200"}} 500
# TYPE quarry_http_request_duration_seconds histogram
{_BUCKET}{{service="rag",method="POST",route="/v1/query",le="0.1"}} {requests - slow}
{_BUCKET}{{service="rag",method="POST",route="/v1/query",le="1.0"}} {requests}
{_BUCKET}{{service="rag",method="POST",route="/v1/query",le="+Inf"}} {requests}
quarry_http_request_duration_seconds_count{{service="rag",method="POST",route="/v1/query"}} {requests}
quarry_http_request_duration_seconds_sum{{service="rag",method="POST",route="/v1/query"}} 1.0
# TYPE quarry_rag_cache_lookups_total counter
quarry_rag_cache_lookups_total{{result="hit"}} 3
quarry_rag_cache_lookups_total{{result="miss"}} 1
# TYPE quarry_rag_degraded_answers_total counter
quarry_rag_degraded_answers_total{{cause="llm"}} 2
quarry_rag_degraded_answers_total{{cause="cache"}} 1
# TYPE quarry_rag_queue_depth gauge
quarry_rag_queue_depth 4
"""


def test_figures_come_from_totals_first_then_from_the_growth_between_scrapes() -> None:
    keeper = FigureKeeper()
    first = keeper.update("rag", _metrics(requests=10, slow=0), at=100.0)
    assert first["requests_total"] == 10  # the /metrics probes are not counted
    assert first["requests_per_s"] is None and first["latency_over"] == "lifetime"
    assert first["latency_p50_s"] == pytest.approx(0.05)
    assert first["cache_hit_rate"] == 0.75 and first["degraded_answers_total"] == 3
    assert first["queue_depth"] == 4

    second = keeper.update("rag", _metrics(requests=30, slow=20), at=102.0)
    assert second["requests_total"] == 30 and second["requests_per_s"] == 10.0
    assert second["window_s"] == 2.0 and second["latency_over"] == "window"
    assert second["latency_p50_s"] == pytest.approx(0.1 + 0.9 * 10 / 20)  # the 20 new ones were slow

    # A restarted service (counters lower than the baseline) shows totals again, no rate.
    restarted = keeper.update("rag", _metrics(requests=2, slow=0), at=103.0)
    assert restarted["requests_per_s"] is None and restarted["requests_total"] == 2


def test_other_services_labels_are_left_out() -> None:
    assert FigureKeeper().update("ingest", _metrics(requests=10, slow=0))["requests_total"] == 0


def test_a_counter_with_no_samples_yet_reads_as_zero() -> None:
    text = "# TYPE quarry_rag_degraded_answers_total counter\n# TYPE quarry_rag_cache_lookups_total counter\n"
    figures = FigureKeeper().update("rag", text)
    assert figures["degraded_answers_total"] == 0 and figures["cache_hit_rate"] is None
    assert figures["latency_p50_s"] is None and "queue_depth" not in figures


def test_a_queue_its_service_could_not_read_has_no_depth() -> None:
    text = "# TYPE quarry_ingest_queue_depth gauge\nquarry_ingest_queue_depth NaN\n"
    assert FigureKeeper().update("ingest", text)["queue_depth"] is None
