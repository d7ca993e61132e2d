"""Dynamic batching: concurrent requests share forward passes; queries never wait behind bulk.

Requests put their texts into one of two lanes by priority (one bound on both). Each lane has
its own worker task and its own model thread, so a query's pass runs beside a bulk pass (an
ingest) instead of after it. A worker takes texts of its lane in arrival order, up to
``max_batch_size`` texts and a padded-token budget (``max_batch_tokens`` for queries,
``bulk_batch_tokens`` for bulk). A batch never mixes lanes: a query's pass is not made longer by
bulk texts. A worker waits at most ``max_wait_ms`` for company when its lane is short. A
request's texts may span several batches; it resolves when its last vector lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from services.common.logs import get_logger
from services.embedder import metrics
from services.embedder.model import Vectors
from services.embedder.priority import Priority

_log = get_logger(__name__)


class QueueFull(Exception):
    """The queue cannot take this request's texts now; retry later."""


class ModelFailed(Exception):
    """The forward pass raised; the requests in that batch fail, the batcher goes on."""


@dataclass(eq=False)
class _Job:
    """One request: its texts, where their vectors go, and who waits for them."""

    texts: list[str]
    tokens: list[int]
    priority: Priority
    future: asyncio.Future[Vectors]
    enqueued_at: float
    vectors: Vectors | None = None
    remaining: int = field(init=False)

    def __post_init__(self) -> None:
        self.remaining = len(self.texts)


@dataclass(frozen=True, slots=True)
class _Item:
    job: _Job
    index: int

    @property
    def tokens(self) -> int:
        return self.job.tokens[self.index]


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_batch_size: int
    max_batch_tokens: int
    max_wait_s: float
    max_queue_items: int
    # False: each batch holds texts of one request only (one request, one forward pass).
    merge_requests: bool = True
    # Padded-token budget of a bulk batch; None: max_batch_tokens.
    bulk_batch_tokens: int | None = None

    def batch_tokens(self, priority: Priority) -> int:
        if priority is Priority.BULK and self.bulk_batch_tokens is not None:
            return min(self.max_batch_tokens, self.bulk_batch_tokens)
        return self.max_batch_tokens


class Batcher:
    def __init__(self, encode: Callable[[list[str]], Vectors], limits: BatchLimits) -> None:
        self._encode = encode
        self._limits = limits
        self._lanes: dict[Priority, deque[_Item]] = {p: deque() for p in Priority}
        self._arrived = {p: asyncio.Event() for p in Priority}
        # One thread per lane: a query's pass must not wait for a bulk pass to end, and within a
        # lane the backend parallelises inside a pass.
        self._executors = {
            p: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"embedder-{p.value}") for p in Priority
        }
        self._workers: list[asyncio.Task[None]] = []
        self._seconds_per_item = 0.01  # refined by every batch; sizes Retry-After

    @property
    def queued(self) -> int:
        return sum(len(lane) for lane in self._lanes.values())

    def start(self) -> None:
        if not self._workers:
            loop = asyncio.get_running_loop()
            self._workers = [loop.create_task(self._run(p), name=f"embedder-{p.value}") for p in Priority]

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers = []
        for lane in self._lanes.values():
            for item in lane:
                if not item.job.future.done():
                    item.job.future.set_exception(ModelFailed("embedder is shutting down"))
            lane.clear()
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)

    def retry_after_s(self) -> int:
        """Seconds until the queue has likely drained: an honest Retry-After."""
        return max(1, int(np.ceil(self.queued * self._seconds_per_item)))

    async def embed(
        self, texts: list[str], tokens: list[int], priority: Priority = Priority.QUERY
    ) -> Vectors:
        """Vectors for ``texts`` (one row each, in order); raises QueueFull or ModelFailed."""
        queued = self.queued
        if queued + len(texts) > self._limits.max_queue_items:
            metrics.REJECTED.inc()
            raise QueueFull(f"{queued} texts queued; limit {self._limits.max_queue_items}")
        loop = asyncio.get_running_loop()
        job = _Job(texts, tokens, priority, loop.create_future(), time.perf_counter())
        self._lanes[priority].extend(_Item(job, i) for i in range(len(texts)))
        metrics.QUEUE_DEPTH.set(queued + len(texts))
        self._arrived[priority].set()
        # A cancelled caller leaves its future cancelled; the worker then skips its texts.
        return await job.future

    async def _run(self, priority: Priority) -> None:
        lane = self._lanes[priority]
        while True:
            await self._gather(lane, self._arrived[priority])
            batch = self._take(lane, self._limits.batch_tokens(priority))
            metrics.QUEUE_DEPTH.set(self.queued)
            if batch:
                await self._execute(batch, self._executors[priority])

    async def _gather(self, lane: deque[_Item], arrived: asyncio.Event) -> None:
        while not lane:
            arrived.clear()
            await arrived.wait()
        if not self._limits.merge_requests or self._limits.max_wait_s <= 0:
            return
        # Waiting only pays while the batch is short; a full lane runs at once.
        deadline = time.perf_counter() + self._limits.max_wait_s
        while len(lane) < self._limits.max_batch_size:
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), left)
            except TimeoutError:
                return

    def _take(self, lane: deque[_Item], budget: int) -> list[_Item]:
        limits = self._limits
        batch: list[_Item] = []
        longest = 0
        while lane and len(batch) < limits.max_batch_size:
            item = lane[0]
            if item.job.future.done():  # caller gone (cancelled or failed): skip its texts
                lane.popleft()
                continue
            if batch and not limits.merge_requests and item.job is not batch[0].job:
                break
            padded = max(longest, item.tokens) * (len(batch) + 1)
            if batch and padded > budget:
                break
            longest = max(longest, item.tokens)
            batch.append(lane.popleft())
        return batch

    async def _execute(self, batch: list[_Item], executor: ThreadPoolExecutor) -> None:
        # Longest first: backends that split a batch get passes of like lengths (less padding).
        batch.sort(key=lambda item: item.tokens, reverse=True)
        started = time.perf_counter()
        for item in batch:
            metrics.QUEUE_SECONDS.labels(item.job.priority.value).observe(started - item.job.enqueued_at)
        loop = asyncio.get_running_loop()
        try:
            texts = [item.job.texts[item.index] for item in batch]
            vectors = await loop.run_in_executor(executor, self._encode, texts)
        except Exception as exc:  # a failing pass fails its callers, never the worker
            metrics.MODEL_FAILURES.inc()
            _log.exception("model_failed", texts=len(batch))
            for item in batch:
                if not item.job.future.done():
                    item.job.future.set_exception(ModelFailed(f"{type(exc).__name__}: {exc}"))
            return
        elapsed = time.perf_counter() - started
        self._record(batch, elapsed)
        for item, vector in zip(batch, vectors, strict=True):
            self._deliver(item, vector)

    def _record(self, batch: list[_Item], elapsed: float) -> None:
        tokens = sum(item.tokens for item in batch)
        metrics.BATCH_SIZE.observe(len(batch))
        metrics.MODEL_SECONDS.observe(elapsed)
        metrics.TOKENS.inc(tokens)
        if elapsed > 0:
            metrics.TOKENS_PER_SECOND.set(tokens / elapsed)
        # Exponential average of cost per text, for Retry-After.
        self._seconds_per_item = 0.8 * self._seconds_per_item + 0.2 * elapsed / len(batch)

    @staticmethod
    def _deliver(item: _Item, vector: Vectors) -> None:
        job = item.job
        if job.future.done():
            return
        if job.vectors is None:
            job.vectors = np.empty((len(job.texts), vector.shape[0]), dtype=np.float32)
        job.vectors[item.index] = vector
        job.remaining -= 1
        if job.remaining == 0:
            job.future.set_result(job.vectors)
