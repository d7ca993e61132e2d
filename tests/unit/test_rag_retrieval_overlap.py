"""A hybrid search's BM25 leg runs while the query is still being embedded (pure logic: the
store's calls are recorded, not made)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any, cast

import pytest

from services.common import vector_schema as vs
from services.common.embeddings_client import EmbeddingsClient
from services.rag.config import RagSettings
from services.rag.resilience import circuit_breakers
from services.rag.retrieval.guarded import GuardedRetrieval
from services.rag.retrieval.retriever import CollectionLayout, Hit, RetrievalConfig, Retriever


class _Recorder(Retriever):
    def __init__(self, fail: str = "") -> None:  # no Milvus client: every store call is below
        self.calls: list[str] = []
        self._fail = fail
        self.config = RetrievalConfig()

    async def _check_exists(self, collection: str) -> CollectionLayout:
        return CollectionLayout(lexical=True, index=None)

    async def _ranked(self, collection: str, anns_field: str, *args: Any, **kwargs: Any) -> list[Hit]:
        self.calls.append(anns_field)
        await asyncio.sleep(0)
        if anns_field == self._fail:
            raise RuntimeError(f"{anns_field} failed")
        if anns_field == vs.DENSE:
            return [Hit("c1", "d1", 0, "text", "title", "s", {}, 0.9, dense_score=0.9)]
        return [Hit("c1", "d1", 0, "text", "title", "s", {}, 7.0, bm25_score=7.0)]


async def test_bm25_starts_before_the_vector_is_ready() -> None:
    retriever = _Recorder()
    vector: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
    search = asyncio.create_task(retriever.search("c", vector, 5, query="cells divide", mode="hybrid"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert retriever.calls == [vs.SPARSE]  # the dense leg waits for the vector
    vector.set_result([0.1] * 4)
    hits = await search
    assert retriever.calls == [vs.SPARSE, vs.DENSE]
    assert hits[0].dense_score == 0.9 and hits[0].bm25_score == 7.0


async def test_a_failed_embedding_fails_the_search_and_leaves_no_stray_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    retriever = _Recorder(fail=vs.SPARSE)
    vector: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
    vector.set_exception(ConnectionError("embedder down"))
    with pytest.raises(ConnectionError):
        await retriever.search("c", vector, 5, query="cells divide", mode="hybrid")
    for _ in range(5):
        await asyncio.sleep(0)
    gc.collect()
    await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text


class _SlowEmbeddings:
    """Answers after the BM25 search is done, as a busy embedder would."""

    async def embed(self, texts: list[str]) -> list[list[float]]:
        await asyncio.sleep(0.05)
        return [[0.5] * 4 for _ in texts]


async def test_bm25_alone_still_returns_the_vector_an_answer_needs() -> None:
    retrieval = GuardedRetrieval(
        RagSettings(), circuit_breakers(5, 30.0), cast(EmbeddingsClient, _SlowEmbeddings()), _Recorder()
    )
    timings: dict[str, float] = {}
    vector, hits = await retrieval.embed_and_retrieve(
        "c", "cells divide", 5, timings=timings, mode="bm25", vector_needed=True
    )
    assert vector == [0.5] * 4 and [h.chunk_id for h in hits] == ["c1"]
    assert timings["embed"] >= 50 and timings["retrieve"] >= 0


async def test_bm25_alone_embeds_nothing_unless_the_vector_is_needed() -> None:
    retrieval = GuardedRetrieval(
        RagSettings(), circuit_breakers(5, 30.0), cast(EmbeddingsClient, _SlowEmbeddings()), _Recorder()
    )
    timings: dict[str, float] = {}
    vector, _ = await retrieval.embed_and_retrieve("c", "cells divide", 5, timings=timings, mode="bm25")
    assert vector is None and "embed" not in timings
