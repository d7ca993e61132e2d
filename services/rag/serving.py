"""The query path: cache → embed → retrieve → generate → safety and citations.

Hard dependencies (embedder, Milvus) down mean 503; soft ones degrade the answer and
say so in ``degraded``: without the LLM the answer is extracted from the top passages,
without Redis it is served uncached.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from purgatory import AsyncCircuitBreakerFactory

from services.common.context import current_request_id
from services.common.errors import APIError
from services.common.logs import get_logger
from services.rag import rag_metrics
from services.rag.attribution import attribute
from services.rag.cache import AnswerCache, CacheUnavailable, Lookup
from services.rag.config import RagSettings
from services.rag.extractive import extractive_answer
from services.rag.guarded_retrieval import GuardedRetrieval
from services.rag.llm_client import ChatClient, GenerationUnavailable
from services.rag.prompt import PROMPT_VERSION, build_messages, select_sources
from services.rag.resilience import DependencyUnavailable, GuardPolicy, named_guard
from services.rag.retriever import Hit
from services.rag.safety import groundedness, injection_flags, redact
from services.rag.schemas import Citation, QueryRequest, QueryResponse, Safety, Usage, filter_expression
from services.rag.streaming import StreamRedactor, sse_event

_log = get_logger(__name__)
NO_SOURCES_ANSWER = "I found no documents in this collection that answer the question."
# Cached answers are replayed in pieces of this many characters on a stream.
_REPLAY_CHUNK = 48


@dataclass
class _Query:
    """What the stages before generation found out about one request."""

    request: QueryRequest
    started: float
    injection: list[str]
    timings: dict[str, float] = field(default_factory=dict)
    degraded: list[str] = field(default_factory=list)
    cache: Lookup | None = None  # None: the cache was unavailable
    sources: list[Hit] = field(default_factory=list)

    @property
    def cached(self) -> dict[str, Any] | None:
        """The cached answer, on a hit."""
        return None if self.cache is None else self.cache.value


class QueryService:
    def __init__(
        self,
        settings: RagSettings,
        cache: AnswerCache,
        retrieval: GuardedRetrieval,
        chat: ChatClient,
        breakers: AsyncCircuitBreakerFactory,
    ) -> None:
        self.settings = settings
        self.cache = cache
        self.retrieval = retrieval
        self.chat = chat
        s = settings
        self._cache_guard = named_guard(breakers, "redis", GuardPolicy(s.cache_timeout_s), CacheUnavailable)
        self._llm_guard = named_guard(breakers, "llm", GuardPolicy(s.llm_timeout_s), GenerationUnavailable)
        self._drift = rag_metrics.DriftTracker()

    def _cache_settings(self, request: QueryRequest) -> dict[str, Any]:
        """Everything besides the question and collection that changes the answer."""
        retrieval = self.retrieval.retriever.config
        return {
            "top_k": request.top_k or self.settings.default_top_k,
            "max_tokens": request.max_tokens or self.settings.default_max_tokens,
            "temperature": request.temperature,
            "filters": filter_expression(request.filters),
            "embedding_model": self.settings.embedding_model,
            "llm_model": self.settings.llm_model,
            "retrieval": [
                retrieval.mode,
                retrieval.fusion,
                retrieval.rrf_k,
                retrieval.dense_weight,
                retrieval.bm25_weight,
                retrieval.hybrid_depth,
            ],
            "context_tokens": self.settings.max_context_tokens,
            "prompt": PROMPT_VERSION,
            "answer_rules": [
                self.settings.redact_pii,
                self.settings.groundedness_threshold,
                self.settings.attribution_min_overlap,
            ],
        }

    async def answer(self, request: QueryRequest) -> QueryResponse:
        query = await self._prepare(request)
        if query.cached is not None:
            return self._from_cache(query)
        mark = time.perf_counter()
        usage = Usage()
        if not query.sources:
            text = NO_SOURCES_ANSWER
        else:
            messages, max_tokens = self._prompt(query)
            try:
                completion = await self._llm_guard.call(
                    lambda: self.chat.complete(messages, max_tokens, request.temperature), idempotent=False
                )
                text = completion.text.strip()
                usage = _usage(completion.prompt_tokens, completion.completion_tokens)
            except DependencyUnavailable as exc:
                text = self._degrade_llm(query, exc)
        query.timings["generate"] = _ms(mark)
        redaction = redact(text) if self.settings.redact_pii else None
        answer = redaction.text if redaction else text
        response = self._response(query, answer, usage, redaction.kinds if redaction else [])
        await self._store(query, response)
        return response

    async def stream(self, request: QueryRequest) -> AsyncIterator[str]:
        """Runs every stage that can fail with an HTTP error now, then returns the event stream."""
        query = await self._prepare(request)
        if query.cached is not None:
            return self._replay(query)
        return self._generate_events(query)

    async def _prepare(self, request: QueryRequest) -> _Query:
        injection = injection_flags(request.question)
        for flag in injection:
            rag_metrics.SAFETY_FLAGS.labels(f"injection:{flag}").inc()
        if injection and self.settings.safety_strict:
            raise APIError(
                400,
                "prompt_injection_suspected",
                f"the question looks like a prompt injection ({', '.join(injection)}); rephrase it",
            )
        query = _Query(request, time.perf_counter(), injection)

        mark = time.perf_counter()
        try:
            settings = self._cache_settings(request)
            query.cache = await self._cache_guard.call(
                lambda: self.cache.lookup(request.question, request.collection, settings), idempotent=True
            )
            rag_metrics.CACHE_LOOKUPS.labels("hit" if query.cached is not None else "miss").inc()
        except DependencyUnavailable as exc:
            _log.warning("cache_degraded", error=str(exc))
            rag_metrics.CACHE_LOOKUPS.labels("error").inc()
            query.degraded.append("cache")
        query.timings["cache"] = _ms(mark)
        if query.cached is not None:
            return query

        mark = time.perf_counter()
        vector = await self.retrieval.embed(request.question)
        query.timings["embed"] = _ms(mark)

        mark = time.perf_counter()
        hits = await self.retrieval.retrieve(
            request.collection,
            vector,
            request.top_k or self.settings.default_top_k,
            query=request.question,
            filter_expr=filter_expression(request.filters),
        )
        query.timings["retrieve"] = _ms(mark)
        if hits:
            self._drift.observe(hits[0].score)
        query.sources = select_sources(hits, self.settings.max_context_tokens)
        return query

    def _prompt(self, query: _Query) -> tuple[list[dict[str, str]], int]:
        messages = build_messages(query.request.question, query.sources)
        return messages, query.request.max_tokens or self.settings.default_max_tokens

    def _degrade_llm(self, query: _Query, exc: Exception) -> str:
        _log.warning("llm_degraded", error=str(exc))
        query.degraded.append("llm")
        return extractive_answer(query.request.question, query.sources)

    def _response(self, query: _Query, answer: str, usage: Usage, redacted: list[str]) -> QueryResponse:
        """The final answer with its citations, safety scores, timings and metrics."""
        texts = [hit.text for hit in query.sources]
        attribution = attribute(answer, texts, self.settings.attribution_min_overlap)
        score = groundedness(answer, texts) if query.sources else 0.0
        grounded = score >= self.settings.groundedness_threshold
        rag_metrics.GROUNDEDNESS.observe(score)
        for flag in [*(f"redacted:{kind}" for kind in redacted), *([] if grounded else ["ungrounded"])]:
            rag_metrics.SAFETY_FLAGS.labels(flag).inc()
        for cause in query.degraded:
            rag_metrics.DEGRADED_ANSWERS.labels(cause).inc()
        self._finish_timings(query)
        return QueryResponse(
            answer=answer,
            citations=[_citation(n, query.sources[n - 1]) for n in attribution.numbers],
            usage=usage,
            timings_ms=query.timings,
            cached=False,
            degraded=query.degraded,
            request_id=current_request_id(),
            attribution=attribution.mode,
            safety=Safety(
                injection=query.injection, redacted=redacted, groundedness=round(score, 4), grounded=grounded
            ),
        )

    def _finish_timings(self, query: _Query) -> None:
        timings = query.timings
        timings["total"] = _ms(query.started)
        outside = sum(timings.get(stage, 0.0) for stage in ("embed", "retrieve", "generate"))
        for stage, ms in timings.items():
            if stage != "total":
                rag_metrics.STAGE_SECONDS.labels(stage).observe(ms / 1000)
        # rag's own time: everything but waiting on the embedder, Milvus and the LLM.
        rag_metrics.STAGE_SECONDS.labels("overhead").observe(max(0.0, timings["total"] - outside) / 1000)

    async def _store(self, query: _Query, response: QueryResponse) -> None:
        # Degraded answers are not cached: the next request should get the real one.
        lookup = query.cache
        if lookup is None or response.degraded:
            return
        value = response.model_dump(exclude={"request_id", "timings_ms", "cached", "degraded"})
        # Every source the model saw, not just the cited ones: a replayed stream's `sources`
        # event must match what a generated one sends.
        value[_CACHED_SOURCES] = self._sources(query)
        try:
            await self._cache_guard.call(
                lambda: self.cache.put(lookup.key, lookup.generation, value), idempotent=True
            )
        except DependencyUnavailable:
            response.degraded.append("cache")
            rag_metrics.DEGRADED_ANSWERS.labels("cache").inc()

    def _from_cache(self, query: _Query) -> QueryResponse:
        assert query.cached is not None
        self._finish_timings(query)
        cached = {k: v for k, v in query.cached.items() if k != _CACHED_SOURCES}
        response = QueryResponse.model_validate(
            {
                **cached,
                "cached": True,
                "degraded": [],
                "timings_ms": query.timings,
                "request_id": current_request_id(),
            }
        )
        response.safety.injection = query.injection  # a property of this question, not of the answer
        return response

    def _sources(self, query: _Query) -> list[dict[str, Any]]:
        return [_citation(n, hit).model_dump() for n, hit in enumerate(query.sources, start=1)]

    def _sources_event(self, query: _Query) -> str:
        return sse_event("sources", {"sources": self._sources(query), "request_id": current_request_id()})

    async def _replay(self, query: _Query) -> AsyncIterator[str]:
        """A cached answer as the same event sequence a generated one has."""
        assert query.cached is not None
        # Entries written before sources were stored replay their citations instead.
        sources = query.cached.get(_CACHED_SOURCES, query.cached.get("citations", []))
        response = self._from_cache(query)
        yield sse_event("sources", {"sources": sources, "request_id": response.request_id})
        for start in range(0, len(response.answer), _REPLAY_CHUNK):
            yield sse_event("token", {"text": response.answer[start : start + _REPLAY_CHUNK]})
        yield sse_event("done", response.model_dump())

    async def _generate_events(self, query: _Query) -> AsyncIterator[str]:
        request = query.request
        yield self._sources_event(query)
        mark = time.perf_counter()
        redactor = StreamRedactor(self.settings.redact_pii)
        sent: list[str] = []
        usage = Usage()
        if not query.sources:
            sent.append(NO_SOURCES_ANSWER)
            yield sse_event("token", {"text": NO_SOURCES_ANSWER})
        else:
            messages, max_tokens = self._prompt(query)
            try:
                stream = await self._llm_guard.call(
                    lambda: self.chat.open_stream(messages, max_tokens, request.temperature), idempotent=False
                )
            except DependencyUnavailable as exc:
                stream = None
                text = redactor.feed(self._degrade_llm(query, exc))
                sent.append(text)
                yield sse_event("token", {"text": text})
            if stream is not None:
                try:
                    async for delta in stream.deltas():
                        if text := redactor.feed(delta):
                            sent.append(text)
                            yield sse_event("token", {"text": text})
                except GenerationUnavailable as exc:
                    # Tokens already sent cannot be taken back: finish with what there is, and say so.
                    fallback = self._degrade_llm(query, exc)
                    if not sent and (text := redactor.feed(fallback)):
                        sent.append(text)
                        yield sse_event("token", {"text": text})
                finally:
                    await stream.aclose()
                usage = _usage(stream.prompt_tokens, stream.completion_tokens)
        if rest := redactor.flush():
            sent.append(rest)
            yield sse_event("token", {"text": rest})
        query.timings["generate"] = _ms(mark)
        response = self._response(query, "".join(sent).strip(), usage, sorted(redactor.kinds))
        await self._store(query, response)
        yield sse_event("done", response.model_dump())


def _usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


_CACHED_SOURCES = "_sources"


def _citation(n: int, hit: Hit) -> Citation:
    return Citation(
        n=n,
        doc_id=hit.doc_id,
        chunk_id=hit.chunk_id,
        title=hit.title,
        source=hit.source,
        score=round(hit.score, 6),
        text=hit.text,
    )


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)
