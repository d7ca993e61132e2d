"""Embed a text and retrieve its chunks, guarded: the one path ``/v1/query`` and ``/v1/search`` share.

Both routes get the same timeouts, retries with jitter, circuit breakers (one per
dependency, shared by the routes), collection reload after a Milvus restart, and the
same HTTP errors: 404 for a missing collection, 503 with ``Retry-After`` when the
embedder or Milvus is down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

from purgatory import AsyncCircuitBreakerFactory

from services.common.embeddings_client import EmbeddingsClient, EmbeddingsUnavailable
from services.common.errors import APIError
from services.common.logs import get_logger
from services.common.milvus_connect import needs_load
from services.rag import rag_metrics
from services.rag.config import RagSettings
from services.rag.resilience import DependencyUnavailable, GuardPolicy, named_guard
from services.rag.retrieval.collection_loading import CollectionLoader
from services.rag.retrieval.retriever import (
    CollectionNotFound,
    Hit,
    Mode,
    RetrievalConfig,
    RetrievalUnavailable,
    Retriever,
    settle,
)
from services.rag.stage_timing import ms_since

_log = get_logger(__name__)


class GuardedRetrieval:
    def __init__(
        self,
        settings: RagSettings,
        breakers: AsyncCircuitBreakerFactory,
        embeddings: EmbeddingsClient,
        retriever: Retriever,
        loader: CollectionLoader | None = None,
    ) -> None:
        self.retriever = retriever
        self.loader = loader
        self._embeddings = embeddings
        self._retry_after = str(max(1, round(settings.breaker_reset_s)))
        s = settings
        self._embed_guard = named_guard(
            breakers,
            "embedder",
            GuardPolicy(s.embed_timeout_s, s.retries, s.retry_backoff_s),
            EmbeddingsUnavailable,
        )
        self._retrieve_guard = named_guard(
            breakers,
            "milvus",
            GuardPolicy(s.retrieve_timeout_s, s.retries, s.retry_backoff_s),
            RetrievalUnavailable,
        )

    async def embed(self, text: str) -> list[float]:
        return (await self.embed_many([text]))[0]

    async def embed_many(self, texts: list[str]) -> list[list[float]]:
        try:
            return await self._embed_guard.call(lambda: self._embeddings.embed(texts), idempotent=True)
        except DependencyUnavailable as exc:
            raise self._unavailable(exc, "embedder_unavailable", "the embedding service") from exc

    async def embed_and_retrieve(
        self,
        collection: str,
        text: str,
        top_k: int,
        *,
        timings: dict[str, float],
        mode: Mode | None = None,
        filter_expr: str = "",
        config: RetrievalConfig | None = None,
        vector_needed: bool = False,
    ) -> tuple[list[float] | None, list[Hit]]:
        """The text's vector and its hits. The vector is None for BM25 alone unless
        ``vector_needed`` (an answer's checks use the question's vector). The embedding is not
        awaited before the search starts: a hybrid search's BM25 leg runs beside it.
        ``timings`` gets ``embed`` and ``retrieve``, the search's time beyond the embedding, so
        the two add up to the time taken."""
        started = time.perf_counter()
        mode = mode or (config or self.retriever.config).mode
        embedding: asyncio.Task[list[float]] | None = None
        if mode != "bm25" or vector_needed:
            embedding = asyncio.create_task(self.embed(text))
            embedding.add_done_callback(lambda _: timings.update(embed=ms_since(started)))
        try:
            hits = await self.retrieve(
                collection, embedding, top_k, query=text, mode=mode, filter_expr=filter_expr, config=config
            )
            # BM25 alone never awaits the vector an answer needs, and may finish before it.
            vector = await embedding if embedding is not None else None
        finally:
            if embedding is not None:
                settle(embedding)
        timings["retrieve"] = round(ms_since(started) - timings.get("embed", 0.0), 3)
        return vector, hits

    async def retrieve(
        self,
        collection: str,
        vector: list[float] | Awaitable[list[float]] | None,
        top_k: int,
        *,
        query: str,
        mode: Mode | None = None,
        filter_expr: str = "",
        config: RetrievalConfig | None = None,
    ) -> list[Hit]:
        async def search() -> list[Hit]:
            return await self.retriever.search(
                collection, vector, top_k, query=query, mode=mode, filter_expr=filter_expr, config=config
            )

        async def search_or_reload() -> list[Hit]:
            try:
                return await search()
            except RetrievalUnavailable as exc:
                if self.loader is None or not needs_load(exc):
                    raise
                _log.warning("collection_reloaded", collection=collection)
                await self.loader.load(collection)
                return await search()

        try:
            return await self._retrieve_guard.call(search_or_reload, idempotent=True)
        except CollectionNotFound as exc:
            raise APIError(404, "collection_not_found", f"collection {collection!r} does not exist") from exc
        except DependencyUnavailable as exc:
            raise self._unavailable(exc, "retrieval_unavailable", "the vector store") from exc

    def close(self) -> None:
        self.retriever.close()
        if self.loader is not None:
            self.loader.close()

    def _unavailable(self, exc: DependencyUnavailable, code: str, what: str) -> APIError:
        """A hard dependency is down: 503, retry after the breaker would let a call through."""
        rag_metrics.UNAVAILABLE.labels(exc.dependency).inc()
        return APIError(
            503, code, f"{what} is unavailable; retry shortly", headers={"retry-after": self._retry_after}
        )
