"""The batcher's own logic, with a stand-in encode function (the model is tested in integration)."""

from __future__ import annotations

import asyncio
import threading
import zlib

import numpy as np
import pytest

from services.embedder.batcher import Batcher, BatchLimits, ModelFailed, QueueFull
from services.embedder.model import Vectors
from services.embedder.priority import Priority


class _Recorder:
    """Encodes each text to a vector derived from its own bytes and records every batch.

    ``hold`` keeps the first pass running until released, so tests can queue requests
    behind it and know exactly what the next batch will find.
    """

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.started = threading.Event()
        self.fail_on = fail_on

    def __call__(self, texts: list[str]) -> Vectors:
        self.batches.append(list(texts))
        self.started.set()
        self.hold.wait(10)
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError("boom")
        return np.stack([_vector(t) for t in texts])


def _vector(text: str) -> Vectors:
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    return rng.standard_normal(8).astype(np.float32)


def _limits(**overrides: float | bool | None) -> BatchLimits:
    values: dict[str, float | bool | None] = {
        "max_batch_size": 64,
        "max_batch_tokens": 100_000,
        "max_wait_s": 0.0,
        "max_queue_items": 1000,
        "merge_requests": True,
    }
    values.update(overrides)
    return BatchLimits(**values)  # type: ignore[arg-type]


async def _blocked(batcher: Batcher, recorder: _Recorder) -> asyncio.Task[Vectors]:
    """Starts one request whose pass blocks until ``recorder.hold`` is set."""
    recorder.hold.clear()
    task = asyncio.create_task(batcher.embed(["first"], [1]))
    await asyncio.to_thread(recorder.started.wait, 10)
    return task


@pytest.fixture
async def recorder() -> _Recorder:
    return _Recorder()


async def _batcher(recorder: _Recorder, limits: BatchLimits) -> Batcher:
    batcher = Batcher(recorder, limits)
    batcher.start()
    return batcher


async def test_concurrent_callers_share_a_pass_and_each_gets_its_own_vectors(
    recorder: _Recorder,
) -> None:
    batcher = await _batcher(recorder, _limits())
    first = await _blocked(batcher, recorder)
    requests = [[f"text {i}", f"other {i}"] for i in range(10)]
    tasks = [asyncio.create_task(batcher.embed(texts, [2, 3])) for texts in requests]
    await asyncio.sleep(0)  # let every request reach the queue
    recorder.hold.set()
    results = await asyncio.gather(*tasks)
    await first
    await batcher.stop()

    assert len(recorder.batches) == 2  # the held pass, then all ten requests together
    assert sorted(recorder.batches[1]) == sorted(t for texts in requests for t in texts)
    for texts, vectors in zip(requests, results, strict=True):
        np.testing.assert_array_equal(vectors, np.stack([_vector(t) for t in texts]))


async def test_batch_size_and_padded_token_limits_split_batches(recorder: _Recorder) -> None:
    batcher = await _batcher(recorder, _limits(max_batch_size=4, max_batch_tokens=30))
    first = await _blocked(batcher, recorder)
    texts = [f"t{i}" for i in range(10)]
    # Once the 10-token text is in, at most three texts fit in 30 padded tokens.
    tokens = [2, 2, 2, 2, 2, 10, 2, 2, 2, 2]
    task = asyncio.create_task(batcher.embed(texts, tokens))
    await asyncio.sleep(0)
    recorder.hold.set()
    vectors = await task
    await first
    await batcher.stop()

    batches = recorder.batches[1:]
    assert [len(b) for b in batches] == [4, 3, 3]
    assert batches[1][0] == "t5"  # longest first within its batch
    np.testing.assert_array_equal(vectors, np.stack([_vector(t) for t in texts]))


async def test_batching_off_runs_one_request_per_pass(recorder: _Recorder) -> None:
    batcher = await _batcher(recorder, _limits(merge_requests=False))
    first = await _blocked(batcher, recorder)
    tasks = [asyncio.create_task(batcher.embed([f"a{i}", f"b{i}"], [1, 1])) for i in range(3)]
    await asyncio.sleep(0)
    recorder.hold.set()
    await asyncio.gather(*tasks, first)
    await batcher.stop()

    assert [sorted(b) for b in recorder.batches[1:]] == [[f"a{i}", f"b{i}"] for i in range(3)]


async def test_full_queue_refuses_then_accepts_once_drained(recorder: _Recorder) -> None:
    batcher = await _batcher(recorder, _limits(max_queue_items=3))
    first = await _blocked(batcher, recorder)
    queued = asyncio.create_task(batcher.embed(["a", "b"], [1, 1]))
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await batcher.embed(["c", "d"], [1, 1])
    assert batcher.retry_after_s() >= 1
    recorder.hold.set()
    await asyncio.gather(queued, first)
    vectors = await batcher.embed(["c", "d"], [1, 1])
    await batcher.stop()
    np.testing.assert_array_equal(vectors, np.stack([_vector("c"), _vector("d")]))


async def test_failing_pass_fails_its_callers_and_the_batcher_goes_on() -> None:
    recorder = _Recorder(fail_on="poison")
    batcher = await _batcher(recorder, _limits())
    with pytest.raises(ModelFailed, match="boom"):
        await batcher.embed(["poison"], [1])
    vectors = await batcher.embed(["fine"], [1])
    await batcher.stop()
    np.testing.assert_array_equal(vectors[0], _vector("fine"))


async def test_cancelled_callers_texts_are_skipped(recorder: _Recorder) -> None:
    batcher = await _batcher(recorder, _limits())
    first = await _blocked(batcher, recorder)
    gone = asyncio.create_task(batcher.embed(["gone"], [1]))
    kept = asyncio.create_task(batcher.embed(["kept"], [1]))
    await asyncio.sleep(0)
    gone.cancel()
    recorder.hold.set()
    await asyncio.gather(kept, first)
    await batcher.stop()
    assert recorder.batches[1:] == [["kept"]]


class _BulkHolder(_Recorder):
    """Holds every pass of bulk texts (``b...``) until released; other passes run at once."""

    def __call__(self, texts: list[str]) -> Vectors:
        self.batches.append(list(texts))
        if texts[0].startswith("b"):
            self.started.set()
            self.hold.wait(10)
        return np.stack([_vector(t) for t in texts])


async def test_a_query_runs_while_a_bulk_pass_is_still_running() -> None:
    recorder = _BulkHolder()
    batcher = await _batcher(recorder, _limits(bulk_batch_tokens=3))
    recorder.hold.clear()
    bulk = asyncio.create_task(batcher.embed([f"b{i}" for i in range(9)], [1] * 9, Priority.BULK))
    await asyncio.to_thread(recorder.started.wait, 10)  # the bulk's first pass is running, held
    queries = [await batcher.embed([f"query {i}"], [1], Priority.QUERY) for i in range(2)]
    assert not bulk.done()  # both queries came back while the bulk pass was still held
    recorder.hold.set()
    vectors = await bulk
    await batcher.stop()

    assert [q[0].tolist() for q in queries] == [_vector(f"query {i}").tolist() for i in range(2)]
    assert vectors.tolist() == np.stack([_vector(f"b{i}") for i in range(9)]).tolist()
    assert recorder.batches == [
        ["b0", "b1", "b2"],
        ["query 0"],
        ["query 1"],
        ["b3", "b4", "b5"],
        ["b6", "b7", "b8"],
    ]


async def test_bulk_batches_keep_to_their_smaller_token_budget(recorder: _Recorder) -> None:
    batcher = await _batcher(recorder, _limits(max_batch_tokens=1000, bulk_batch_tokens=30))
    first = await _blocked(batcher, recorder)
    bulk = asyncio.create_task(batcher.embed([f"b{i}" for i in range(6)], [10] * 6, Priority.BULK))
    query = asyncio.create_task(batcher.embed([f"q{i}" for i in range(6)], [10] * 6, Priority.QUERY))
    await asyncio.sleep(0)
    recorder.hold.set()
    await asyncio.gather(bulk, query, first)
    await batcher.stop()

    lengths = {lane: [len(b) for b in recorder.batches[1:] if b[0][0] == lane] for lane in "bq"}
    assert lengths == {"q": [6], "b": [3, 3]}  # queries whole, bulk by 30 tokens
