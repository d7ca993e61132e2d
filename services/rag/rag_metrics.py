"""Prometheus metrics of the answering path (the HTTP metrics come from services.common)."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from services.rag.answer.grounding import Draft

_FAST_BUCKETS: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

STAGE_SECONDS = Histogram(
    "quarry_rag_stage_duration_seconds",
    "Time per stage of a query: cache, embed, retrieve, generate, verify (generated sentences), answer "
    "(quotes or no answer), and overhead (rag's own time: the rest).",
    ["stage"],
    buckets=_FAST_BUCKETS,
)
CACHE_LOOKUPS = Counter(
    "quarry_rag_cache_lookups_total",
    "Answer-cache lookups by result: hit, miss, or error (Redis unavailable).",
    ["result"],
)
DEGRADED_ANSWERS = Counter(
    "quarry_rag_degraded_answers_total",
    "Answers served degraded, by cause (llm: extractive answer; cache: served uncached).",
    ["cause"],
)
UNAVAILABLE = Counter(
    "quarry_rag_unavailable_total",
    "Queries refused with 503 because a hard dependency (embedder, milvus) was down.",
    ["dependency"],
)
LEXICAL_SEARCHES = Counter(
    "quarry_rag_lexical_searches_total",
    "BM25 searches of collections with a lexical index, by what answered: lexical_index, or milvus"
    " (the index did not hold the collection whole, or failed).",
    ["engine"],
)
CIRCUIT_OPEN = Gauge(
    "quarry_rag_circuit_open", "1 while the circuit breaker of a dependency is open.", ["dependency"]
)
SAFETY_FLAGS = Counter(
    "quarry_rag_safety_flags_total",
    "Safety findings: injection patterns in questions, redactions, and answers with an unsupported "
    "sentence shown (ungrounded).",
    ["flag"],
)
SUPPORTED_SHARE = Histogram(
    "quarry_rag_answer_supported_share",
    "Share of an answer's shown sentences that a source sentence supports.",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)
ANSWERS = Counter(
    "quarry_rag_answers_total",
    "Answers by what wrote them: llm (verified), extractive (quoted), none (abstained).",
    ["answered_by"],
)
SENTENCES = Counter(
    "quarry_rag_generated_sentences_total",
    "Generated sentences checked against the sources, by verdict: supported or unsupported.",
    ["verdict"],
)
SENTENCE_VECTORS = Counter(
    "quarry_rag_sentence_vectors_total",
    "Sentence vectors needed for answers: embedded now, or found in the in-process cache.",
    ["result"],
)
TOP1_RECENT = Gauge(
    "quarry_rag_top1_score_recent", "Rolling mean of the best passage's raw cosine relevance."
)
TOP1_BASELINE = Gauge(
    "quarry_rag_top1_score_baseline", "Long-run (slow EWMA) mean of the best passage's raw relevance."
)
TOP1_DRIFT = Gauge(
    "quarry_rag_retrieval_drift_ratio",
    "(recent - baseline) / baseline of the raw top-1 relevance; strongly negative means questions "
    "moved away from the documents, or retrieval got worse.",
)


# Per variant. Variants are few (variants_max bounds the file), and a variant dropped from
# the file has its series removed, so these labels stay bounded.
VARIANT_ANSWERS = Counter(
    "quarry_rag_variant_answers_total",
    "Answers per variant (name@version), by what wrote them (none: abstained) and whether cached.",
    ["variant", "answered_by", "cached"],
)
VARIANT_STAGE_SECONDS = Histogram(
    "quarry_rag_variant_stage_duration_seconds",
    "Time per stage of a query, per variant (total included).",
    ["variant", "stage"],
    buckets=_FAST_BUCKETS,
)
VARIANT_TOKENS = Counter(
    "quarry_rag_variant_tokens_total",
    "LLM tokens per variant, by kind: prompt or completion.",
    ["variant", "kind"],
)
VARIANT_COST = Counter(
    "quarry_rag_variant_cost_total",
    "Estimated cost of answers per variant (the variant's own prices).",
    ["variant"],
)
VARIANT_SUPPORTED_SHARE = Histogram(
    "quarry_rag_variant_supported_share",
    "Share of an answer's shown sentences that a source supports, per variant.",
    ["variant"],
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)
VARIANT_FEEDBACK = Counter(
    "quarry_rag_variant_feedback_total",
    "Feedback on answers per variant, by rating: up or down.",
    ["variant", "rating"],
)
VARIANT_DRIFT = Gauge(
    "quarry_rag_variant_retrieval_drift_ratio",
    "Retrieval drift (see quarry_rag_retrieval_drift_ratio) per variant.",
    ["variant"],
)
VARIANT_RELOADS = Counter(
    "quarry_rag_variant_reloads_total",
    "Rereads of the variant file: applied, or rejected (invalid, or a version's pipeline changed).",
    ["result"],
)
RECORDS_PENDING = Gauge(
    "quarry_rag_answer_records_pending", "Answer records queued, not yet written to Redis."
)
RECORDS_WRITTEN = Counter("quarry_rag_answer_records_written_total", "Answer records written to Redis.")
RECORDS_WRITE_ERRORS = Counter(
    "quarry_rag_answer_records_write_errors_total", "Failed writes of answer records (retried with backoff)."
)
RECORDS_DROPPED = Counter(
    "quarry_rag_answer_records_dropped_total",
    "Answer records dropped because the queue was full while Redis was unreachable.",
)

_VariantMetric = Counter | Gauge | Histogram
_variant_series: dict[str, set[tuple[_VariantMetric, tuple[str, ...]]]] = {}


def for_variant(metric: _VariantMetric, variant: str, *labels: str) -> Any:
    """The metric's child for this variant (noted, so :func:`forget_variant` can remove it)."""
    _variant_series.setdefault(variant, set()).add((metric, labels))
    return metric.labels(variant, *labels)


def forget_variant(variant: str) -> None:
    """Removes a variant's series once it has left the file."""
    for metric, labels in _variant_series.pop(variant, set()):
        metric.remove(variant, *labels)


def record_answer(
    draft: Draft, share: float, grounded: bool, redacted: list[str], degraded: list[str]
) -> None:
    ANSWERS.labels(draft.answered_by).inc()
    for verdict in draft.checked:
        SENTENCES.labels("supported" if verdict.supported else "unsupported").inc()
    if draft.shown:
        SUPPORTED_SHARE.observe(share)
    for flag in [*(f"redacted:{kind}" for kind in redacted), *([] if grounded else ["ungrounded"])]:
        SAFETY_FLAGS.labels(flag).inc()
    for cause in degraded:
        DEGRADED_ANSWERS.labels(cause).inc()


class DriftTracker:
    """Rolling mean of recent raw top-1 relevance against a slow exponential baseline.

    The baseline starts from the first full window, so drift reads 0 until there is
    something to compare with; afterwards it follows the recent mean slowly (``alpha``).
    """

    def __init__(self, window: int = 200, alpha: float = 0.002, drift_gauge: Any = None) -> None:
        """``drift_gauge``: where the drift goes (a variant's); None: the suite-wide gauges."""
        self._gauge = drift_gauge
        self._recent: deque[float] = deque(maxlen=window)
        self._alpha = alpha
        self.baseline: float | None = None

    @property
    def recent(self) -> float:
        return sum(self._recent) / len(self._recent) if self._recent else 0.0

    @property
    def drift(self) -> float:
        if self.baseline is None or self.baseline == 0:
            return 0.0
        return (self.recent - self.baseline) / abs(self.baseline)

    def observe(self, score: float) -> None:
        self._recent.append(score)
        if self.baseline is None:
            if len(self._recent) == self._recent.maxlen:
                self.baseline = self.recent
        else:
            self.baseline += self._alpha * (score - self.baseline)
        if self._gauge is not None:
            self._gauge.set(self.drift)
            return
        TOP1_RECENT.set(self.recent)
        TOP1_BASELINE.set(self.baseline if self.baseline is not None else self.recent)
        TOP1_DRIFT.set(self.drift)
