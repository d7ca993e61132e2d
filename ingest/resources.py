"""Open and close what an ingest process talks to: Milvus, the embedder, Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from ingest.chunking import Chunker, chunker_for
from ingest.collections import CollectionConfig, CollectionConfigs
from ingest.config import IngestSettings
from ingest.indexer import Indexer
from ingest.jobs import JobStore
from ingest.sandbox import LoaderPool
from ingest.store import ChunkStore
from services.common.embeddings_client import EmbeddingsClient


@dataclass
class IngestResources:
    settings: IngestSettings
    store: ChunkStore
    embeddings: EmbeddingsClient
    redis: Any
    indexer: Indexer
    configs: CollectionConfigs
    jobs: JobStore
    # Loader processes start at the first file loaded, so the API, which loads none, has none.
    loaders: LoaderPool

    async def chunker(self, collection: str) -> Chunker:
        config = await self.configs.get(collection)
        return chunker_for(config.chunk_tokens, config.chunk_overlap_tokens)


# Builds the embedder client from ingest's arguments; a caller may pass a subclass (``quarry
# eval`` passes one that caches vectors on disk) and ingest still decides what is sent.
EmbeddingsFactory = Callable[..., EmbeddingsClient]


@asynccontextmanager
async def open_resources(
    settings: IngestSettings, embeddings_client: EmbeddingsFactory = EmbeddingsClient
) -> AsyncIterator[IngestResources]:
    store = ChunkStore.from_settings(settings)
    # Long timeout: a big batch may wait behind others in the embedder's queue.
    embeddings = embeddings_client(
        settings.embedder_url, settings.embedding_model, timeout_s=120.0, priority="bulk"
    )
    redis = aioredis.Redis.from_url(settings.redis_url)
    loaders = LoaderPool(settings.sandbox_limits())
    try:
        yield IngestResources(
            settings=settings,
            store=store,
            embeddings=embeddings,
            redis=redis,
            indexer=Indexer(
                store,
                embeddings,
                redis,
                settings.embedding_dim,
                dependency_wait_s=settings.dependency_wait_s,
                max_document_chunks=settings.max_document_chunks,
                max_document_chars=settings.max_document_chars,
                max_doc_id_chars=settings.max_doc_id_chars,
            ),
            configs=CollectionConfigs(
                redis, CollectionConfig(settings.chunk_tokens, settings.chunk_overlap_tokens)
            ),
            jobs=JobStore(redis, settings.job_ttl_s, settings.max_job_warnings),
            loaders=loaders,
        )
    finally:
        loaders.close()
        await embeddings.aclose()
        await redis.aclose()
        store.close()
