"""Embedder metrics: how full batches are, how long texts wait, how fast the model goes."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BATCH_SIZE = Histogram(
    "quarry_embedder_batch_size",
    "Texts per forward pass.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
QUEUE_DEPTH = Gauge("quarry_embedder_queue_depth", "Texts waiting for a batch.")
QUEUE_SECONDS = Histogram(
    "quarry_embedder_queue_seconds",
    "Time a text waits in the queue before its forward pass starts, by priority (query, bulk).",
    ["priority"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MODEL_SECONDS = Histogram(
    "quarry_embedder_model_seconds",
    "Time of one forward pass (one batch).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TOKENS = Counter("quarry_embedder_tokens", "Tokens embedded (rate() gives tokens per second).")
TOKENS_PER_SECOND = Gauge("quarry_embedder_tokens_per_second", "Tokens per second of the last batch.")
REJECTED = Counter("quarry_embedder_rejected", "Requests answered 429 because the queue was full.")
MODEL_FAILURES = Counter("quarry_embedder_model_failures", "Forward passes that raised.")
MODEL_READY = Gauge("quarry_embedder_model_ready", "1 once the model is loaded and warmed up.")
