from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.config import ServiceSettings
from services.common.unset_when_empty import UNSET_WHEN_EMPTY


class RagSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QUARRY_RAG_", extra="ignore", frozen=True)

    port: int = 8103
    embedder_url: str = "http://127.0.0.1:8101"
    embedding_model: str = "all-MiniLM-L6-v2"
    llm_url: str = "http://127.0.0.1:8102"
    llm_model: str = "SmolLM2-135M-Instruct"
    llm_api_key: str = ""
    milvus_uri: str = "http://127.0.0.1:19539"
    milvus_token: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    cache_ttl_s: int = 3600
    default_top_k: int = 4
    max_top_k: int = 50
    max_context_tokens: int = Field(
        700, description="Token budget for numbered sources in the prompt (estimated: ~4 characters a token)."
    )
    default_max_tokens: int = Field(
        192, description="max_tokens of a query that gives none (lowered to the limit when over it)."
    )
    max_tokens_limit: Annotated[int | None, UNSET_WHEN_EMPTY] = Field(
        None,
        ge=1,
        description="Largest max_tokens a query may ask for (422 over it); empty: the LLM's own cap, "
        "read from its /v1/models card (max_tokens, else max_model_len); set: the smaller of the two.",
    )
    prompt_sentences: int = Field(
        10,
        description="N: the prompt holds only the N source sentences closest to the question (keeps a "
        "small model on the question; tuned on QA train); 0: whole passages.",
    )
    embed_timeout_s: float = 10.0
    llm_timeout_s: float = 60.0
    # Retrieval (tuned on SciFact train; see docs/benchmarks.md "Retrieval").
    retrieval_mode: Literal["dense", "bm25", "hybrid"] = Field(
        "hybrid", description="Default search: dense vectors, BM25 full text, or both fused."
    )
    hybrid_fusion: Literal["score", "rrf"] = Field(
        "score", description="Hybrid fusion: weighted max-normalised scores, or weighted reciprocal ranks."
    )
    rrf_k: float = Field(5.0, description="Reciprocal-rank fusion constant k (hybrid_fusion=rrf).")
    fusion_dense_weight: float = Field(0.6, description="Weight of the dense ranking in hybrid fusion.")
    fusion_bm25_weight: float = Field(0.4, description="Weight of the BM25 ranking in hybrid fusion.")
    hybrid_depth: int = Field(100, description="Candidates each retriever contributes to fusion.")
    search_batching: bool = Field(True, description="Gather concurrent searches into one Milvus call.")
    search_batch_window_ms: float = Field(3.0, description="How long a search waits for others to join.")
    search_max_batch: int = Field(64, description="Most searches sent in one Milvus call.")
    rerank_model: str = Field("", description="Local cross-encoder folder for reranking (empty: off).")
    rerank_depth: int = Field(20, description="Candidates the cross-encoder rescores.")
    # Answering: resilience (per-dependency timeouts, retries for idempotent calls, breakers).
    # The timeout also counts the wait for rag's own loop: at 0.25 s, 32 clients on two cores
    # timed out 0.35% of lookups, and three in a row opened the breaker (docs/benchmarks.md).
    cache_timeout_s: float = Field(
        1.0, description="Per-call timeout on Redis for the answer cache (it includes rag's own queueing)."
    )
    retrieve_timeout_s: float = Field(5.0, description="Per-attempt timeout on a Milvus search.")
    retries: int = Field(1, description="Extra attempts (with jittered backoff) for embed and search calls.")
    retry_backoff_s: float = Field(0.05, description="Base of the jittered exponential retry backoff.")
    breaker_failures: int = Field(3, description="Consecutive failures that open a dependency's breaker.")
    breaker_reset_s: float = Field(5.0, description="Seconds an open breaker waits before a trial call.")
    # Answering: safety.
    safety_strict: bool = Field(False, description="Reject questions flagged as prompt injection (400).")
    redact_pii: bool = Field(True, description="Mask emails, phone and (Luhn-valid) card numbers in answers.")
    # Answering: modes, verification and abstention (tuned on the QA set's train split, and on
    # SciFact train for relevance; see docs/benchmarks.md "Answers").
    answer_mode: Literal["auto", "generate", "extractive"] = Field(
        "auto",
        description="auto: generate when the LLM is up, else extract; generate: always ask the LLM; "
        "extractive: quote source sentences, no LLM. Generated sentences are always verified.",
    )
    unsupported_sentences: Literal["remove", "mark"] = Field(
        "remove",
        description="Generated sentences no source supports: removed, or kept and marked supported=false.",
    )
    support_min_similarity: float = Field(
        0.5, description="Least cosine between a generated sentence and the source sentence supporting it."
    )
    support_min_coverage: float = Field(
        0.5, description="Least share of a generated sentence's content words found in its support."
    )
    anchor_sentences: int = Field(
        3,
        description="A generated answer is shown only when one of its sentences rests on one of the N "
        "source sentences closest to the question; else source quotes answer.",
    )
    support_max_foreign_words: int = Field(
        0,
        description="Most subject words (from the sources' titles and headings) a generated sentence "
        "may use that its support lacks.",
    )
    support_max_new_run: int = Field(
        2,
        description="Most content words in a row of a generated sentence that its support never uses "
        "(more reads as an invented clause).",
    )
    min_relevance: float = Field(
        0.2, description="Least cosine between the question and the best passage; below it, no answer."
    )
    min_question_coverage: float = Field(
        0.5, description="Least share of the question's content words the passages use; below it, no answer."
    )
    extract_min_relevance: float = Field(
        0.75,
        description="Least score (cosine plus the lexical boost) of a quoted sentence; below it, no answer "
        "(generated or quoted).",
    )
    extract_lexical_weight: float = Field(
        0.6, description="Weight of the share of the question's words a sentence uses, added to its cosine."
    )
    extract_subject_min_relevance: Annotated[float | None, UNSET_WHEN_EMPTY] = Field(
        0.5,
        description="A question naming the subjects (titles, headings) of two or more sources also gets "
        "the best sentence of each named source scoring at least this; empty: no such quotes.",
    )
    extract_margin: float = Field(
        0.08, description="Quoted sentences after the best score within this much of it (three at most)."
    )
    sentence_cache_size: int = Field(
        20_000, description="Source-sentence vectors kept in memory (384 floats each for MiniLM)."
    )
    # Answer variants and records (docs/variants.md).
    variants_file: Annotated[Path | None, UNSET_WHEN_EMPTY] = Field(
        None, description="YAML file of answer variants and their weights; empty: one variant, `default@1`."
    )
    variants_max: int = Field(
        8, ge=1, le=64, description="Most variants a file may hold (bounds metric labels)."
    )
    variants_reload_s: float = Field(
        2.0, gt=0, description="How often the variant file is checked for changes."
    )
    records_redis_url: str = Field(
        "", description="Redis for answer records and feedback (empty: redis_url); wants persistence on."
    )
    records_retention_days: float = Field(
        30.0, gt=0, description="Days an answer record and its feedback are kept."
    )
    records_queue_max: int = Field(
        10_000,
        ge=1,
        description="Answer records held in memory while Redis is unreachable; the oldest go first.",
    )
