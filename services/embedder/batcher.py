"""Dynamic batching: concurrent requests share forward passes.

Requests put their texts into one bounded queue. A single worker task takes
texts in arrival order up to ``max_batch_size`` texts and ``max_batch_tokens``
padded tokens, waiting at most ``max_wait_ms`` for company when the queue is
short, and runs the model on one dedicated thread so the event loop keeps
accepting requests meanwhile. A request's texts may span several batches; it
resolves when its last vector lands.
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


class Batcher:
    def __init__(self, encode: Callable[[list[str]], Vectors], limits: BatchLimits) -> None:
        self._encode = encode
        self._limits = limits
        self._queue: deque[_Item] = deque()
        self._arrived = asyncio.Event()
        # One thread: the backend parallelises inside a forward pass; two passes would fight.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder-model")
        self._worker: asyncio.Task[None] | None = None
        self._seconds_per_item = 0.01  # refined by every batch; sizes Retry-After

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="embedder-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        for item in self._queue:
            if not item.job.future.done():
                item.job.future.set_exception(ModelFailed("embedder is shutting down"))
        self._queue.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def retry_after_s(self) -> int:
        """Seconds until the queue has likely drained: an honest Retry-After."""
        return max(1, int(np.ceil(self.queued * self._seconds_per_item)))

    async def embed(self, texts: list[str], tokens: list[int]) -> Vectors:
        """Vectors for ``texts`` (one row each, in order); raises QueueFull or ModelFailed."""
        if len(self._queue) + len(texts) > self._limits.max_queue_items:
            metrics.REJECTED.inc()
            raise QueueFull(f"{len(self._queue)} texts queued; limit {self._limits.max_queue_items}")
        job = _Job(texts, tokens, asyncio.get_running_loop().create_future(), time.perf_counter())
        self._queue.extend(_Item(job, i) for i in range(len(texts)))
        metrics.QUEUE_DEPTH.set(len(self._queue))
        self._arrived.set()
        # A cancelled caller leaves its future cancelled; the worker then skips its texts.
        return await job.future

    async def _run(self) -> None:
        while True:
            await self._gather()
            batch = self._take()
            metrics.QUEUE_DEPTH.set(len(self._queue))
            if batch:
                await self._execute(batch)

    async def _gather(self) -> None:
        while not self._queue:
            self._arrived.clear()
            await self._arrived.wait()
        if not self._limits.merge_requests or self._limits.max_wait_s <= 0:
            return
        # Waiting only pays while the batch is short; a full queue runs at once.
        deadline = time.perf_counter() + self._limits.max_wait_s
        while len(self._queue) < self._limits.max_batch_size:
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                return

    def _take(self) -> list[_Item]:
        limits = self._limits
        batch: list[_Item] = []
        longest = 0
        while self._queue and len(batch) < limits.max_batch_size:
            item = self._queue[0]
            if item.job.future.done():  # caller gone (cancelled or failed): skip its texts
                self._queue.popleft()
                continue
            if batch and not limits.merge_requests and item.job is not batch[0].job:
                break
            padded = max(longest, item.tokens) * (len(batch) + 1)
            if batch and padded > limits.max_batch_tokens:
                break
            longest = max(longest, item.tokens)
            batch.append(self._queue.popleft())
        return batch

    async def _execute(self, batch: list[_Item]) -> None:
        # Longest first: backends that split a batch get passes of like lengths (less padding).
        batch.sort(key=lambda item: item.tokens, reverse=True)
        started = time.perf_counter()
        for item in batch:
            metrics.QUEUE_SECONDS.observe(started - item.job.enqueued_at)
        loop = asyncio.get_running_loop()
        try:
            texts = [item.job.texts[item.index] for item in batch]
            vectors = await loop.run_in_executor(self._executor, self._encode, texts)
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
