"""Answer records and feedback, kept in Redis where they outlive a restart.

Every answer served gets a record: the question, the variant that answered, what was
retrieved, each shown sentence with its support, time per stage, tokens, cost and what was
degraded. Records are written by a background task, so an answer never waits on the store:
while Redis is down they queue in memory (bounded; the oldest go first, counted) and are
written when it is back. A record is kept ``retention_s`` and then swept, with its feedback.

Records carry no Redis TTL on purpose: a Redis running ``volatile-lru`` (the answer cache's
policy) evicts only keys with one, so records are never evicted to make room for answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import deque
from collections.abc import Iterable
from typing import Any

from services.common.logs import get_logger
from services.rag import rag_metrics

_log = get_logger(__name__)

INDEX_KEY = "quarry:records"  # sorted set: answer id -> time recorded
_BATCH = 200
# After the first record arrives, the writer waits this long for others to share its Redis
# round trip: one write per answer would cost each answer a round trip's CPU.
_GATHER_S = 0.05
_SWEEP_EVERY_S = 60.0
_MAX_BACKOFF_S = 5.0


def record_key(answer_id: str) -> str:
    return f"quarry:record:{answer_id}"


def feedback_key(answer_id: str) -> str:
    return f"quarry:feedback:{answer_id}"


def new_answer_id() -> str:
    return "ans_" + uuid.uuid4().hex


class RecordsUnavailable(Exception):
    pass


class RecordStore:
    def __init__(self, redis: Any, retention_s: float, queue_max: int) -> None:
        self._redis = redis
        self._retention_s = retention_s
        self._pending: deque[dict[str, Any]] = deque(maxlen=queue_max)
        self._wake = asyncio.Event()
        self._inflight: list[dict[str, Any]] = []  # taken from the queue, being written
        self._last_sweep = 0.0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(self, record: dict[str, Any]) -> None:
        """Queues a record; never waits and never fails the answer."""
        if len(self._pending) == self._pending.maxlen:
            rag_metrics.RECORDS_DROPPED.inc()
        self._pending.append(record)
        rag_metrics.RECORDS_PENDING.set(len(self._pending))
        self._wake.set()

    def queued(self, answer_id: str) -> dict[str, Any] | None:
        """A record not written yet (feedback may come before the writer has run)."""
        return next((r for r in (*self._inflight, *self._pending) if r["answer_id"] == answer_id), None)

    async def run(self) -> None:
        """Writes queued records until cancelled; retries with backoff while Redis is down."""
        backoff = 0.1
        while True:
            if not self._pending:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):  # time to sweep
                    await asyncio.wait_for(self._wake.wait(), timeout=_SWEEP_EVERY_S)
            if len(self._pending) < _BATCH:
                await asyncio.sleep(_GATHER_S)
            batch = [self._pending.popleft() for _ in range(min(_BATCH, len(self._pending)))]
            self._inflight = batch
            try:
                if batch:
                    await self._write(batch)
                    rag_metrics.RECORDS_WRITTEN.inc(len(batch))
                self._inflight = []
                await self._sweep()
                backoff = 0.1
            except Exception as exc:  # any Redis failure: keep the batch, try again later
                self._inflight = []
                self._requeue(batch)
                rag_metrics.RECORDS_WRITE_ERRORS.inc()
                _log.warning("answer_records_unwritten", error=str(exc), pending=len(self._pending))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
            rag_metrics.RECORDS_PENDING.set(len(self._pending))

    async def flush(self, timeout_s: float) -> None:
        """On shutdown: one last try to write what is queued."""
        batch = list(self._pending)
        if not batch:
            return
        try:
            await asyncio.wait_for(self._write(batch), timeout_s)
            self._pending.clear()
        except Exception as exc:
            _log.warning("answer_records_lost_on_shutdown", error=str(exc), count=len(batch))

    def _requeue(self, batch: list[dict[str, Any]]) -> None:
        room = (self._pending.maxlen or 0) - len(self._pending)
        if len(batch) > room:  # the newest of the failed batch give way to the ones queued since
            rag_metrics.RECORDS_DROPPED.inc(len(batch) - room)
            batch = batch[:room]
        self._pending.extendleft(reversed(batch))

    async def _write(self, batch: Iterable[dict[str, Any]]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for record in batch:
                pipe.set(record_key(record["answer_id"]), json.dumps(record))
                pipe.zadd(INDEX_KEY, {record["answer_id"]: record["at"]})
            await pipe.execute()

    async def _sweep(self) -> None:
        now = time.time()
        if now - self._last_sweep < _SWEEP_EVERY_S:
            return
        self._last_sweep = now
        old = await self._redis.zrangebyscore(INDEX_KEY, "-inf", now - self._retention_s, start=0, num=1000)
        if old:
            ids = [i.decode() if isinstance(i, bytes) else i for i in old]
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.delete(*[record_key(i) for i in ids], *[feedback_key(i) for i in ids])
                pipe.zrem(INDEX_KEY, *ids)
                await pipe.execute()

    async def find(self, answer_id: str) -> dict[str, Any] | None:
        queued = self.queued(answer_id)
        if queued is not None:
            return queued
        try:
            raw = await self._redis.get(record_key(answer_id))
        except Exception as exc:
            raise RecordsUnavailable(str(exc)) from exc
        return json.loads(raw) if raw else None

    async def put_feedback(self, answer_id: str, feedback: dict[str, Any]) -> None:
        """Stores (or replaces: a user may change their mind) the feedback on an answer."""
        try:
            await self._redis.set(feedback_key(answer_id), json.dumps(feedback))
        except Exception as exc:
            raise RecordsUnavailable(str(exc)) from exc
