"""Generation metrics: latency per token, tokens, queue, in-flight requests and estimated cost."""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

TIME_TO_FIRST_TOKEN = Histogram(
    "quarry_llm_time_to_first_token_seconds",
    "From request arrival (queue wait included) to the first generated token.",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
INTER_TOKEN_LATENCY = Histogram(
    "quarry_llm_inter_token_latency_seconds",
    "Time between consecutive streamed deltas of one request.",
    ["model"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28),
)
TOKENS = Counter(
    "quarry_llm_tokens_total", "Tokens processed, by kind (prompt, completion).", ["model", "kind"]
)
REQUESTS = Counter(
    "quarry_llm_requests_total",
    "Generations ended, by outcome (completed, cancelled, timeout, error).",
    ["model", "outcome"],
)
REJECTED = Counter("quarry_llm_rejected_total", "Requests refused with 429 because the queue was full.")
QUEUE_DEPTH = Gauge("quarry_llm_queue_depth", "Requests waiting for a generation slot.")
IN_FLIGHT = Gauge("quarry_llm_requests_in_flight", "Generations running now.")
COST = Counter(
    "quarry_llm_cost_usd_total", "Estimated cost of generations from the configured prices.", ["model"]
)
REQUEST_COST = Histogram(
    "quarry_llm_request_cost_usd",
    "Estimated cost of one request.",
    ["model"],
    buckets=(1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0),
)


@dataclass(frozen=True)
class Prices:
    per_1k_prompt: float
    per_1k_completion: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.per_1k_prompt + completion_tokens * self.per_1k_completion) / 1000


class GenerationRecord:
    """Times one request's deltas and records it once it ends."""

    def __init__(self, model: str, prompt_tokens: int, arrived: float) -> None:
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self._arrived = arrived
        self._last: float | None = None

    def delta(self, tokens: int) -> None:
        now = time.perf_counter()
        if tokens:
            if self._last is None:
                TIME_TO_FIRST_TOKEN.labels(self.model).observe(now - self._arrived)
            else:
                INTER_TOKEN_LATENCY.labels(self.model).observe(now - self._last)
            self._last = now
        self.completion_tokens += tokens

    def finish(self, outcome: str, prices: Prices) -> float:
        """Records the outcome, tokens and cost; returns the cost."""
        REQUESTS.labels(self.model, outcome).inc()
        TOKENS.labels(self.model, "prompt").inc(self.prompt_tokens)
        TOKENS.labels(self.model, "completion").inc(self.completion_tokens)
        cost = prices.cost(self.prompt_tokens, self.completion_tokens)
        COST.labels(self.model).inc(cost)
        REQUEST_COST.labels(self.model).observe(cost)
        return cost
