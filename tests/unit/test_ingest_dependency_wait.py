"""Indexing waits out an embedder or Milvus outage instead of failing its job (F6).

Pure retry logic: a scripted embeddings client stands in for the embedder; the chaos test
(`make chaos`) covers the same path with the real embedder SIGKILLed and restarted.
"""

from __future__ import annotations

from typing import Any

import pytest

from ingest.indexer import Indexer
from ingest.store import StoreUnavailable
from services.common.embeddings_client import EmbeddingsUnavailable


class _FlakyEmbeddings:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        if self.calls <= self.failures:
            raise EmbeddingsUnavailable("embedder unreachable: ConnectError")
        return [[float(len(t))] for t in texts]


def _indexer(embeddings: Any, wait_s: float) -> Indexer:
    return Indexer(store=None, embeddings=embeddings, redis=None, dim=1, dependency_wait_s=wait_s)  # type: ignore[arg-type]


async def test_an_outage_shorter_than_the_wait_is_ridden_out() -> None:
    embeddings = _FlakyEmbeddings(failures=2)
    vectors = await _indexer(embeddings, wait_s=30)._embed_waiting(["ab", "c"])
    assert vectors == [[2.0], [1.0]]
    assert embeddings.calls == 3


async def test_an_outage_longer_than_the_wait_fails_the_attempt() -> None:
    embeddings = _FlakyEmbeddings(failures=10**6)
    with pytest.raises(EmbeddingsUnavailable):
        await _indexer(embeddings, wait_s=0.2)._embed_waiting(["x"])
    assert embeddings.calls >= 1


class _FlakyStore:
    """Milvus refusing connections twice (a restart), then answering."""

    def __init__(self) -> None:
        self.calls = 0

    async def doc_states(self, collection: str, doc_ids: list[str]) -> dict[str, Any]:
        self.calls += 1
        if self.calls <= 2:
            raise StoreUnavailable("Milvus unreachable: MilvusException")
        return {}


async def test_a_milvus_restart_is_ridden_out_too() -> None:
    store = _FlakyStore()
    indexer = Indexer(store=store, embeddings=None, redis=None, dim=1, dependency_wait_s=30)  # type: ignore[arg-type]
    outcomes = await indexer.index_batch("c", [], chunker=None)  # type: ignore[arg-type]
    assert outcomes == {}
    assert store.calls == 3
