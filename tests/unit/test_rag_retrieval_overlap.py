"""A hybrid search's BM25 leg runs while the query is still being embedded (pure logic: the
store's calls are recorded, not made)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from services.common import vector_schema as vs
from services.rag.retrieval.retriever import Hit, RetrievalConfig, Retriever


class _Recorder(Retriever):
    def __init__(self, fail: str = "") -> None:  # no Milvus client: every store call is below
        self.calls: list[str] = []
        self._fail = fail
        self.config = RetrievalConfig()

    async def _check_exists(self, collection: str) -> bool:
        return True

    async def _ranked(
        self, collection: str, anns_field: str, data: Any, limit: int, filter_expr: str
    ) -> list[Hit]:
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
