"""App factory for the rag service."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.common.embeddings_client import EmbeddingsClient
from services.common.wiring import wire_service
from services.rag import rag_metrics
from services.rag.answer.evidence import SentenceVectors
from services.rag.answer.extractive import ExtractPolicy
from services.rag.answer.grounding import Grounding
from services.rag.answer.llm_client import ChatClient
from services.rag.answer.token_limit import READ_TIMEOUT_S, TokenLimit
from services.rag.answer.verification import VerifyPolicy
from services.rag.answer_records import RecordStore
from services.rag.cache import AnswerCache
from services.rag.config import RagSettings
from services.rag.feedback import FeedbackService
from services.rag.resilience import circuit_breakers
from services.rag.retrieval.collection_loading import CollectionLoader
from services.rag.retrieval.guarded import GuardedRetrieval
from services.rag.retrieval.reranker import Reranker
from services.rag.retrieval.retriever import RetrievalConfig, Retriever
from services.rag.retrieval.search import SearchService
from services.rag.routes import router
from services.rag.serving import QueryService
from services.rag.variants.registry import VariantRegistry
from services.rag.variants.spec import VariantError, VariantSpec


def create_app(settings: RagSettings | None = None) -> FastAPI:
    settings = settings or RagSettings()
    # Socket timeouts as the cache's own: the cache is optional, a hung Redis must not hang answers.
    redis = aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.cache_timeout_s,
        socket_connect_timeout=settings.cache_timeout_s,
    )
    # Someone waits on every text rag embeds: the embedder runs them ahead of ingest's.
    embeddings = EmbeddingsClient(
        settings.embedder_url, settings.embedding_model, settings.embed_timeout_s, priority="query"
    )
    chat = ChatClient(settings.llm_url, settings.llm_model, settings.llm_api_key, settings.llm_timeout_s)
    # Its own client, retrying on a dropped connection: after a Redis restart the pool's idle
    # connections are dead, and a feedback call must not fail on one of them.
    records_redis = aioredis.Redis.from_url(
        settings.records_redis_url or settings.redis_url,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    retriever = Retriever(settings.milvus_uri, settings.milvus_token, RetrievalConfig.from_settings(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One breaker per dependency, shared by /v1/query and /v1/search.
        breakers = circuit_breakers(settings.breaker_failures, settings.breaker_reset_s)
        retrieval = GuardedRetrieval(
            settings,
            breakers,
            embeddings,
            retriever,
            CollectionLoader(settings.milvus_uri, settings.milvus_token),
        )
        sentence_vectors = SentenceVectors(retrieval.embed_many, settings.sentence_cache_size)
        reranker = await asyncio.to_thread(Reranker, settings.rerank_model) if settings.rerank_model else None
        records = RecordStore(
            records_redis, settings.records_retention_days * 86_400, settings.records_queue_max
        )
        cache = AnswerCache(redis, settings.cache_ttl_s)
        suite_drift = rag_metrics.DriftTracker()
        # One client per LLM endpoint the variants name; rag's own is shared by most.
        chats = {(settings.llm_url, settings.llm_model): chat}

        def build(spec: VariantSpec) -> QueryService:
            own = spec.settings(settings)
            if spec.rerank and reranker is None:
                raise VariantError(f"{spec.id} asks for rerank, but rag has no rerank_model")
            endpoint = (own.llm_url, own.llm_model)
            if endpoint not in chats:
                chats[endpoint] = ChatClient(own.llm_url, own.llm_model, own.llm_api_key, own.llm_timeout_s)
            variant_chat = chats[endpoint]
            return QueryService(
                own,
                cache,
                retrieval,
                variant_chat,
                breakers,
                Grounding(
                    sentence_vectors,
                    VerifyPolicy.from_settings(own),
                    ExtractPolicy.from_settings(own),
                    own.anchor_sentences,
                ),
                TokenLimit(
                    functools.partial(variant_chat.max_tokens_cap, READ_TIMEOUT_S), own.max_tokens_limit
                ),
                spec,
                records,
                reranker,
                suite_drift,
                llm_breaker="llm" if own.llm_url == settings.llm_url else f"llm:{spec.name}",
            )

        registry = VariantRegistry(
            settings.variants_file, build, records_redis, settings.variants_max, settings.variants_reload_s
        )
        await registry.load()
        app.state.variants = registry
        app.state.feedback = FeedbackService(records)
        app.state.search_service = SearchService(settings, retrieval, reranker)
        tasks = [asyncio.create_task(records.run()), asyncio.create_task(registry.watch())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await records.flush(timeout_s=2.0)
            await embeddings.aclose()
            for client in chats.values():
                await client.aclose()
            await redis.aclose()
            await records_redis.aclose()
            retrieval.close()

    async def embedder_ready() -> None:
        (await embeddings.http.get("/health/ready")).raise_for_status()

    app = FastAPI(title="Quarry rag", lifespan=lifespan)
    app.include_router(router)
    # Only hard dependencies gate readiness: without the LLM rag answers extractively,
    # without Redis it answers uncached; taking it out of rotation then would be worse.
    wire_service(
        app,
        service="rag",
        settings=settings,
        readiness={"embedder": embedder_ready, "milvus": retriever.ping},
    )
    return app
