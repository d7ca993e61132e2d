"""The query path: cache → embed → retrieve → answer (generate and verify, or extract) → safety.

Hard dependencies (embedder, Milvus) down mean 503; soft ones degrade the answer and
say so in ``degraded``: without the LLM the answer is quoted from the sources, without
Redis it is served uncached. Whatever writes the answer, a sentence is shown only when a
source sentence supports it (``services.rag.answer.verification``), and when nothing
relevant is found the answer says so (``answerable: false``) instead of making one up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from purgatory import AsyncCircuitBreakerFactory

from services.common.context import current_request_id
from services.common.errors import APIError
from services.common.logs import get_logger
from services.common.sentences import closed_length
from services.rag import rag_metrics
from services.rag.answer.grounding import (
    NO_ANSWER,
    Asked,
    Draft,
    Evidence,
    Grounding,
    Unsupported,
    as_vector,
    question_coverage,
    relevance,
)
from services.rag.answer.llm_client import (
    ChatClient,
    ChatStream,
    Completion,
    GenerationRejected,
    GenerationUnavailable,
)
from services.rag.answer.prompt import PROMPT_VERSION, SYSTEM_PROMPT, build_messages, select_sources
from services.rag.answer.safety import injection_flags, redact
from services.rag.answer.streaming import sse_event
from services.rag.answer.token_limit import TokenLimit
from services.rag.answer.verification import RULES_VERSION, Verdict, claims
from services.rag.answer_records import RecordStore, new_answer_id
from services.rag.cache import AnswerCache, CacheUnavailable, Lookup
from services.rag.config import RagSettings
from services.rag.resilience import DependencyUnavailable, GuardPolicy, named_guard
from services.rag.retrieval.guarded import GuardedRetrieval
from services.rag.retrieval.reranker import Reranker
from services.rag.retrieval.retriever import Hit, RetrievalConfig
from services.rag.schemas import (
    AnswerSentence,
    Citation,
    QueryRequest,
    QueryResponse,
    Safety,
    Usage,
    filter_expression,
)
from services.rag.stage_timing import ms_since
from services.rag.variants.spec import VariantSpec

_log = get_logger(__name__)


@dataclass
class _Query:
    """What the stages before answering found out about one request."""

    request: QueryRequest
    key_id: str  # the API key that asked (from the gateway); "" when rag is called directly
    started: float
    injection: list[str]
    mode: str
    unsupported: Unsupported
    max_tokens: int  # the request's, or the default within the limit
    timings: dict[str, float] = field(default_factory=dict)
    degraded: list[str] = field(default_factory=list)
    cache: Lookup | None = None  # None: the cache was unavailable
    sources: list[Hit] = field(default_factory=list)
    vector: list[float] = field(default_factory=list)
    relevant: bool = False

    @property
    def generates(self) -> bool:
        """Whether the LLM is asked (every mode but ``extractive``)."""
        return self.mode != "extractive"

    @property
    def asked(self) -> Asked:
        return Asked(self.request.question, as_vector(self.vector))

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
        grounding: Grounding,
        token_limit: TokenLimit,
        variant: VariantSpec,
        records: RecordStore,
        reranker: Reranker | None,
        suite_drift: rag_metrics.DriftTracker,
        llm_breaker: str = "llm",
    ) -> None:
        self.settings = settings
        self.variant = variant
        self.records = records
        self.reranker = reranker if variant.rerank else None
        self.retrieval_config = RetrievalConfig.from_settings(settings)
        self.token_limit = token_limit
        self.cache = cache
        self.retrieval = retrieval
        self.chat = chat
        self.grounding = grounding
        s = settings
        self._cache_guard = named_guard(breakers, "redis", GuardPolicy(s.cache_timeout_s), CacheUnavailable)
        self._llm_guard = named_guard(
            breakers, llm_breaker, GuardPolicy(s.llm_timeout_s), GenerationUnavailable
        )
        self._suite_drift = suite_drift
        self._drift = rag_metrics.DriftTracker(
            drift_gauge=rag_metrics.for_variant(rag_metrics.VARIANT_DRIFT, variant.id)
        )

    def _cache_settings(self, query: _Query) -> dict[str, Any]:
        """Everything besides the question and collection that changes the answer."""
        request = query.request
        retrieval = self.retrieval_config
        verify = self.grounding.verify_policy
        extract = self.grounding.extract_policy
        return {
            "variant": self.variant.id,
            "system_prompt": self.variant.system_prompt,
            "rerank": self.reranker is not None,
            "top_k": request.top_k or self.settings.default_top_k,
            "max_tokens": query.max_tokens,
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
            "prompt_sentences": self.settings.prompt_sentences,
            "prompt": PROMPT_VERSION,
            "answer": [
                RULES_VERSION,
                query.mode,
                query.unsupported,
                verify.min_similarity,
                verify.min_coverage,
                verify.max_foreign,
                verify.max_new_run,
                self.settings.min_relevance,
                self.settings.min_question_coverage,
                extract.min_relevance,
                extract.margin,
                extract.lexical_weight,
                extract.subject_min_relevance,
                self.settings.redact_pii,
            ],
        }

    async def answer(self, request: QueryRequest, key_id: str = "") -> QueryResponse:
        query = await self._prepare(request, key_id)
        if query.cached is not None:
            response = self._from_cache(query)
        else:
            draft, usage = await self._compose(query)
            response = self._response(query, draft, usage)
            await self._store(query, response)
        self._record(query, response)
        return response

    async def _compose(self, query: _Query) -> tuple[Draft, Usage]:
        mark = time.perf_counter()
        if not query.relevant:
            query.timings["answer"] = ms_since(mark)
            return Draft([], "none"), Usage()
        if self.settings.prompt_sentences:  # the prompt is made of the evidence
            evidence = await self.grounding.evidence(query.sources, query.generates)
            # No sentence close enough to quote: no answer, and no LLM time spent on one.
            answerable = self.grounding.answerable(query.asked, evidence)
            completion = await self._generate(query, evidence) if answerable else None
        else:
            # The sources' sentences are embedded while the LLM writes.
            evidence_task = asyncio.create_task(self.grounding.evidence(query.sources, query.generates))
            try:
                completion = await self._generate(query, None)
            finally:
                evidence = await evidence_task
            answerable = self.grounding.answerable(query.asked, evidence)
        if completion is None or not answerable:
            draft = self.grounding.extractive(query.asked, evidence)
            query.timings["answer"] = ms_since(mark)
            return draft, Usage()
        query.timings["generate"] = ms_since(mark)
        mark = time.perf_counter()
        draft = await self.grounding.generated(
            completion.text,
            len(query.sources),
            query.asked,
            evidence,
            query.unsupported,
        )
        query.timings["verify"] = ms_since(mark)
        return draft, _usage(completion.prompt_tokens, completion.completion_tokens)

    async def _generate(self, query: _Query, evidence: Evidence | None) -> Completion | None:
        """The LLM's answer; None for an extractive answer (asked for, or the LLM is down)."""
        if not query.generates:
            return None
        messages, max_tokens = self._prompt(query, evidence)
        temperature = query.request.temperature
        try:
            return await self._llm_guard.call(
                lambda: self.chat.complete(messages, max_tokens, temperature), idempotent=False
            )
        except DependencyUnavailable as exc:
            self._degrade_llm(query, exc)
            return None
        except GenerationRejected as exc:
            raise _rejected(exc) from exc

    async def stream(self, request: QueryRequest, key_id: str = "") -> AsyncIterator[str]:
        """Runs every stage that can fail with an HTTP error now, then returns the event stream."""
        query = await self._prepare(request, key_id)
        if query.cached is not None:
            return self._replay(query)
        evidence = await self.grounding.evidence(query.sources, query.generates) if query.relevant else None
        stream: ChatStream | None = None
        if evidence is not None and query.generates and self.grounding.answerable(query.asked, evidence):
            messages, max_tokens = self._prompt(query, evidence)
            try:
                stream = await self._llm_guard.call(
                    lambda: self.chat.open_stream(messages, max_tokens, request.temperature), idempotent=False
                )
            except DependencyUnavailable as exc:
                self._degrade_llm(query, exc)
            except GenerationRejected as exc:
                raise _rejected(exc) from exc
        return self._answer_events(query, evidence, stream)

    async def _prepare(self, request: QueryRequest, key_id: str) -> _Query:
        # The client's to fix, so refused before any work (and before the LLM would refuse it).
        limit = await self.token_limit.check(request.max_tokens)
        default = self.settings.default_max_tokens
        max_tokens = request.max_tokens or (default if limit is None else min(default, limit))
        injection = injection_flags(request.question)
        for flag in injection:
            rag_metrics.SAFETY_FLAGS.labels(f"injection:{flag}").inc()
        if injection and self.settings.safety_strict:
            raise APIError(
                400,
                "prompt_injection_suspected",
                f"the question looks like a prompt injection ({', '.join(injection)}); rephrase it",
            )
        mode = request.answer_mode or self.settings.answer_mode
        unsupported = request.unsupported or self.settings.unsupported_sentences
        query = _Query(request, key_id, time.perf_counter(), injection, mode, unsupported, max_tokens)

        mark = time.perf_counter()
        try:
            settings = self._cache_settings(query)
            query.cache = await self._cache_guard.call(
                lambda: self.cache.lookup(request.question, request.collection, settings), idempotent=True
            )
            rag_metrics.CACHE_LOOKUPS.labels("hit" if query.cached is not None else "miss").inc()
        except DependencyUnavailable as exc:
            _log.warning("cache_degraded", error=str(exc))
            rag_metrics.CACHE_LOOKUPS.labels("error").inc()
            query.degraded.append("cache")
        query.timings["cache"] = ms_since(mark)
        if query.cached is not None:
            return query

        top_k = request.top_k or self.settings.default_top_k
        vector, hits = await self.retrieval.embed_and_retrieve(
            request.collection,
            request.question,
            max(top_k, self.settings.rerank_depth) if self.reranker else top_k,
            timings=query.timings,
            filter_expr=filter_expression(request.filters),
            config=self.retrieval_config,
            vector_needed=True,
        )
        assert vector is not None
        query.vector = vector
        if self.reranker is not None:
            mark = time.perf_counter()
            hits = (await self.reranker.rerank(request.question, hits))[:top_k]
            query.timings["rerank"] = ms_since(mark)
        query.sources = select_sources(hits, self.settings.max_context_tokens)
        best = relevance(query.sources)
        if best is not None:
            self._suite_drift.observe(best)
            self._drift.observe(best)
        query.relevant = (
            bool(query.sources)
            and (best is None or best >= self.settings.min_relevance)
            and question_coverage(request.question, query.sources) >= self.settings.min_question_coverage
        )
        return query

    def _prompt(self, query: _Query, evidence: Evidence | None) -> tuple[list[dict[str, str]], int]:
        """Whole passages; or, with ``prompt_sentences``, only the sentences closest to the question."""
        excerpts = None
        if evidence is not None and self.settings.prompt_sentences:
            excerpts = self.grounding.excerpts(query.asked, evidence, self.settings.prompt_sentences)
        messages = build_messages(
            query.request.question, query.sources, excerpts, self.variant.system_prompt or SYSTEM_PROMPT
        )
        return messages, query.max_tokens

    def _degrade_llm(self, query: _Query, exc: DependencyUnavailable) -> None:
        """No LLM: ``auto`` quotes the sources instead; ``generate`` was asked for generation only."""
        if query.mode == "generate":
            raise APIError(
                503,
                "generation_unavailable",
                "the LLM is unavailable; retry shortly, or ask with answer_mode auto or extractive",
                headers={"retry-after": str(max(1, round(self.settings.breaker_reset_s)))},
            ) from exc
        _log.warning("llm_degraded", error=str(exc))
        query.degraded.append("llm")

    def _redacted(self, verdict: Verdict) -> tuple[str, list[str]]:
        """A sentence as shown (without its markers), and the kinds of PII masked in it."""
        if not self.settings.redact_pii:
            return verdict.text, []
        redaction = redact(verdict.text)
        return redaction.text, redaction.kinds

    def _line(self, verdict: Verdict) -> str:
        return _with_markers(self._redacted(verdict)[0], verdict.citations)

    def _response(self, query: _Query, draft: Draft, usage: Usage) -> QueryResponse:
        """The final answer with its per-sentence report, citations, safety, timings and metrics."""
        lines: list[str] = []
        redacted: set[str] = set()
        sentences: list[AnswerSentence] = []
        for verdict in draft.shown:
            text, kinds = self._redacted(verdict)
            lines.append(_with_markers(text, verdict.citations))
            redacted.update(kinds)
            sentences.append(
                AnswerSentence(
                    text=text,
                    citations=list(verdict.citations),
                    supported=verdict.supported,
                    support_score=verdict.score,
                    evidence=verdict.evidence.text if verdict.evidence else None,
                )
            )
        supported = sum(v.supported for v in draft.shown)
        share = supported / len(draft.shown) if draft.shown else 1.0
        grounded = supported == len(draft.shown)
        cited = sorted({n for v in draft.shown for n in v.citations})
        rag_metrics.record_answer(draft, share, grounded, sorted(redacted), query.degraded)
        self._finish_timings(query)
        return QueryResponse(
            answer_id=new_answer_id(),
            variant=self.variant.id,
            answer=" ".join(lines) if lines else NO_ANSWER,
            citations=[_citation(n, query.sources[n - 1]) for n in cited],
            usage=usage,
            timings_ms=query.timings,
            cached=False,
            degraded=query.degraded,
            request_id=current_request_id(),
            answerable=draft.answerable,
            answered_by=draft.answered_by,
            answer_sentences=sentences,
            safety=Safety(
                injection=query.injection,
                redacted=sorted(redacted),
                supported_share=round(share, 4),
                grounded=grounded,
                removed_sentences=draft.removed,
            ),
        )

    def _finish_timings(self, query: _Query) -> None:
        timings = query.timings
        timings["total"] = ms_since(query.started)
        outside = sum(timings.get(stage, 0.0) for stage in _WAITING)
        for stage, ms in timings.items():
            rag_metrics.for_variant(rag_metrics.VARIANT_STAGE_SECONDS, self.variant.id, stage).observe(
                ms / 1000
            )
            if stage != "total":
                rag_metrics.STAGE_SECONDS.labels(stage).observe(ms / 1000)
        # rag's own time: everything but waiting on the embedder, Milvus and the LLM (the
        # answering stages are mostly the embedder's sentence vectors).
        rag_metrics.STAGE_SECONDS.labels("overhead").observe(max(0.0, timings["total"] - outside) / 1000)

    async def _store(self, query: _Query, response: QueryResponse) -> None:
        # Degraded answers are not cached: the next request should get the real one.
        lookup = query.cache
        if lookup is None or response.degraded:
            return
        value = response.model_dump(exclude={"answer_id", "request_id", "timings_ms", "cached", "degraded"})
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

    def _record(self, query: _Query, response: QueryResponse) -> None:
        """The answer's record (queued for Redis) and its variant's figures."""
        variant = self.variant
        usage = response.usage
        cost = variant.cost(usage.prompt_tokens, usage.completion_tokens)
        cached = "true" if response.cached else "false"
        rag_metrics.for_variant(rag_metrics.VARIANT_ANSWERS, variant.id, response.answered_by, cached).inc()
        if not response.cached:
            rag_metrics.for_variant(rag_metrics.VARIANT_TOKENS, variant.id, "prompt").inc(usage.prompt_tokens)
            rag_metrics.for_variant(rag_metrics.VARIANT_TOKENS, variant.id, "completion").inc(
                usage.completion_tokens
            )
            rag_metrics.for_variant(rag_metrics.VARIANT_COST, variant.id).inc(cost)
        if response.answer_sentences:
            rag_metrics.for_variant(rag_metrics.VARIANT_SUPPORTED_SHARE, variant.id).observe(
                response.safety.supported_share
            )
        self.records.submit(
            {
                "answer_id": response.answer_id,
                "at": time.time(),
                "key_id": query.key_id,
                "user": query.request.user,
                "collection": query.request.collection,
                "question": query.request.question,
                "variant": variant.id,
                "stream": query.request.stream,
                "cached": response.cached,
                "answered_by": response.answered_by,
                "answerable": response.answerable,
                "retrieved": _retrieved(query),
                "sentences": [s.model_dump(exclude={"evidence"}) for s in response.answer_sentences],
                "timings_ms": response.timings_ms,
                "tokens": {"prompt": usage.prompt_tokens, "completion": usage.completion_tokens},
                "cost": 0.0 if response.cached else cost,
                "degraded": response.degraded,
                "request_id": response.request_id,
            }
        )

    def _from_cache(self, query: _Query) -> QueryResponse:
        assert query.cached is not None
        self._finish_timings(query)
        cached = {k: v for k, v in query.cached.items() if k != _CACHED_SOURCES}
        response = QueryResponse.model_validate(
            {
                **cached,
                "answer_id": new_answer_id(),
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
        """A cached answer as the same event sequence a generated one has: a token per sentence."""
        assert query.cached is not None
        sources = query.cached.get(_CACHED_SOURCES, [])
        response = self._from_cache(query)
        self._record(query, response)
        yield sse_event("sources", {"sources": sources, "request_id": response.request_id})
        for i, text in enumerate(_answer_lines(response)):
            yield _token(text, i)
        yield sse_event("done", response.model_dump())

    async def _answer_events(
        self, query: _Query, evidence: Evidence | None, stream: ChatStream | None
    ) -> AsyncIterator[str]:
        """Sources, then each sentence once it is verified, then ``done`` with the full report.

        Generated text is held back a sentence at a time: a sentence is checked as soon as the
        next one begins (or the text ends), and sent only if a source supports it.
        """
        yield self._sources_event(query)
        mark = time.perf_counter()
        usage = Usage()
        draft: Draft | None = None
        sent = 0
        if evidence is None:
            draft = Draft([], "none")
        elif stream is not None:
            admission = self.grounding.admit(query.asked, evidence, query.unsupported)
            text = ""
            done = 0
            try:
                async for delta in _then_end(stream.deltas()):
                    text += delta or ""
                    cut = len(text) if delta is None else closed_length(text)
                    if cut <= done:
                        continue
                    for verdict in await self._check(text[done:cut], query, evidence):
                        for ready in admission.offer(verdict):
                            yield _token(self._line(ready), sent)
                            sent += 1
                    done = cut
            except GenerationUnavailable as exc:
                # Sentences already sent stand (each was verified); the rest is not coming.
                _log.warning("llm_degraded", error=str(exc))
                query.degraded.append("llm")
            finally:
                await stream.aclose()
            usage = _usage(stream.prompt_tokens, stream.completion_tokens)
            query.timings["generate"] = ms_since(mark)
            draft = admission.finish()
        if draft is None:
            assert evidence is not None
            draft = self.grounding.extractive(query.asked, evidence)
        # What is left to send: quotes (after the model's sentences, or instead), or the refusal.
        lines = [self._line(v) for v in draft.shown[sent:]]
        if not draft.shown:
            lines = [NO_ANSWER]
        for line in lines:
            yield _token(line, sent)
            sent += 1
        response = self._response(query, draft, usage)
        await self._store(query, response)
        self._record(query, response)
        yield sse_event("done", response.model_dump())

    async def _check(self, text: str, query: _Query, evidence: Evidence) -> list[Verdict]:
        return await self.grounding.check(claims(text, len(query.sources), evidence.titles), evidence)


def _answer_lines(response: QueryResponse) -> list[str]:
    """The shown sentences with their markers, as the answer joined them."""
    if not response.answer_sentences:
        return [response.answer]
    return [_with_markers(s.text, s.citations) for s in response.answer_sentences]


def _with_markers(text: str, citations: Sequence[int]) -> str:
    """A shown sentence and its citation markers: "It listens on port 8100. [1]"."""
    markers = "".join(f"[{n}]" for n in citations)
    return f"{text} {markers}" if markers else text


async def _then_end(deltas: AsyncIterator[str]) -> AsyncIterator[str | None]:
    """The deltas, then ``None`` for the end of the text."""
    async for delta in deltas:
        yield delta
    yield None


def _token(text: str, index: int) -> str:
    return sse_event("token", {"text": text if index == 0 else " " + text})


def _rejected(exc: GenerationRejected) -> APIError:
    """The LLM refused the request (e.g. max_tokens over its cap): the client's to fix, not an outage."""
    return APIError(422, "generation_rejected", f"the LLM refused the request: {exc}")


def _usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


_CACHED_SOURCES = "_sources"
# Stages spent waiting on dependencies: "answer" (quotes) and "verify" embed sentences.
_WAITING = ("embed", "retrieve", "generate", "verify", "answer")


def _retrieved(query: _Query) -> list[dict[str, Any]]:
    """Ids and scores of every source the answer was built on (a cached one's, as cached)."""
    if query.cached is None:
        return [
            {"chunk_id": h.chunk_id, "doc_id": h.doc_id, "score": h.score, "relevance": h.dense_score}
            for h in query.sources
        ]
    fields = ("chunk_id", "doc_id", "score", "relevance")
    return [{k: source[k] for k in fields} for source in query.cached.get(_CACHED_SOURCES, [])]


def _citation(n: int, hit: Hit) -> Citation:
    return Citation(
        n=n,
        doc_id=hit.doc_id,
        chunk_id=hit.chunk_id,
        title=hit.title,
        source=hit.source,
        score=round(hit.score, 6),
        relevance=None if hit.dense_score is None else round(hit.dense_score, 6),
        text=hit.text,
    )
