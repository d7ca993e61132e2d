"""The search batcher groups concurrent searches by key and routes each result back."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from services.rag.retrieval.search_batcher import BatchKey, Results, SearchBatcher


class RecordingSearch:
    """Pure stand-in for Milvus: answers each query item with a list naming it."""

    def __init__(self) -> None:
        self.calls: list[tuple[BatchKey, list[Any]]] = []
        self._lock = threading.Lock()

    def __call__(self, key: BatchKey, items: list[Any]) -> Results:
        with self._lock:
            self.calls.append((key, list(items)))
        return [[{"item": item, "collection": key.collection}] for item in items]


KEY_A = BatchKey("c1", "dense", "", 10, ("chunk_id",))
KEY_B = BatchKey("c1", "dense", 'doc_id == "x"', 10, ("chunk_id",))


async def test_concurrent_searches_share_one_call_per_key() -> None:
    search = RecordingSearch()
    batcher = SearchBatcher(search, window_s=0.05, max_batch=64)
    results = await asyncio.gather(
        *(batcher.submit(KEY_A, i) for i in range(5)), *(batcher.submit(KEY_B, i) for i in range(3))
    )
    assert [r[0]["item"] for r in results] == [0, 1, 2, 3, 4, 0, 1, 2]
    assert sorted(len(items) for _, items in search.calls) == [3, 5]
    assert {key for key, _ in search.calls} == {KEY_A, KEY_B}
    assert batcher.batches_sent == 2


async def test_full_batch_goes_without_waiting_for_the_window() -> None:
    search = RecordingSearch()
    batcher = SearchBatcher(search, window_s=3600, max_batch=4)
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(KEY_A, i) for i in range(4))), 30)
    assert len(results) == 4
    assert [len(items) for _, items in search.calls] == [4]


async def test_a_failed_batch_fails_each_caller() -> None:
    def broken(key: BatchKey, items: list[Any]) -> Results:
        raise RuntimeError("store down")

    batcher = SearchBatcher(broken, window_s=0.01, max_batch=8)
    outcomes = await asyncio.gather(*(batcher.submit(KEY_A, i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(o, RuntimeError) and str(o) == "store down" for o in outcomes)


async def test_a_short_answer_fails_the_batch_instead_of_hanging() -> None:
    def short(key: BatchKey, items: list[Any]) -> Results:
        return [[]]

    batcher = SearchBatcher(short, window_s=0.01, max_batch=8)
    with pytest.raises(RuntimeError, match="1 lists for 2 queries"):
        await asyncio.wait_for(asyncio.gather(batcher.submit(KEY_A, 1), batcher.submit(KEY_A, 2)), 30)


async def test_later_searches_open_a_new_batch() -> None:
    search = RecordingSearch()
    batcher = SearchBatcher(search, window_s=0.01, max_batch=8)
    await batcher.submit(KEY_A, "first")
    await batcher.submit(KEY_A, "second")
    assert [items for _, items in search.calls] == [["first"], ["second"]]
