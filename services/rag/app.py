"""App factory for the rag service."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI

from services.common.embeddings_client import EmbeddingsClient
from services.common.wiring import wire_service
from services.rag.answer.evidence import SentenceVectors
from services.rag.answer.extractive import ExtractPolicy
from services.rag.answer.grounding import Grounding
from services.rag.answer.llm_client import ChatClient
from services.rag.answer.token_limit import READ_TIMEOUT_S, TokenLimit
from services.rag.answer.verification import VerifyPolicy
from services.rag.cache import AnswerCache
from services.rag.config import RagSettings
from services.rag.resilience import circuit_breakers
from services.rag.retrieval.collection_loading import CollectionLoader
from services.rag.retrieval.guarded import GuardedRetrieval
from services.rag.retrieval.reranker import Reranker
from services.rag.retrieval.retriever import RetrievalConfig, Retriever
from services.rag.retrieval.search import SearchService
from services.rag.routes import router
from services.rag.serving import QueryService


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
        grounding = Grounding(
            SentenceVectors(retrieval.embed_many, settings.sentence_cache_size),
            VerifyPolicy.from_settings(settings),
            ExtractPolicy.from_settings(settings),
            settings.anchor_sentences,
        )
        token_limit = TokenLimit(
            functools.partial(chat.max_tokens_cap, READ_TIMEOUT_S), settings.max_tokens_limit
        )
        app.state.query_service = QueryService(
            settings,
            AnswerCache(redis, settings.cache_ttl_s),
            retrieval,
            chat,
            breakers,
            grounding,
            token_limit,
        )
        reranker = await asyncio.to_thread(Reranker, settings.rerank_model) if settings.rerank_model else None
        app.state.search_service = SearchService(settings, retrieval, reranker)
        try:
            yield
        finally:
            await embeddings.aclose()
            await chat.aclose()
            await redis.aclose()
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
