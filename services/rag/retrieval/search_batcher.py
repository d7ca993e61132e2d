"""Gathers concurrent searches into one Milvus call, like a dynamic batcher.

Searches that share a collection, field, filter and limit differ only in their query
data, and Milvus answers many query vectors in one call for little more than the cost
of one (Milvus Lite scans the rows once per call). The first search of a group opens a
short window; searches arriving within it ride along; the batch goes when the window
closes or the batch is full.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

Results = list[list[dict[str, Any]]]


class BatchKey(NamedTuple):
    collection: str
    anns_field: str
    filter_expr: str
    limit: int
    output_fields: tuple[str, ...]


# Runs in a worker thread: one blocking Milvus search for many query items.
SearchFn = Callable[[BatchKey, list[Any]], Results]


@dataclass
class _Pending:
    items: list[Any] = field(default_factory=list)
    futures: list[asyncio.Future[list[dict[str, Any]]]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class SearchBatcher:
    def __init__(self, search: SearchFn, window_s: float, max_batch: int) -> None:
        self._search = search
        self._window_s = window_s
        self._max_batch = max_batch
        self._pending: dict[BatchKey, _Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches_sent = 0

    async def submit(self, key: BatchKey, item: Any) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        pending = self._pending.setdefault(key, _Pending())
        future: asyncio.Future[list[dict[str, Any]]] = loop.create_future()
        pending.items.append(item)
        pending.futures.append(future)
        if len(pending.items) >= self._max_batch:
            self._flush(key)
        elif pending.timer is None:
            pending.timer = loop.call_later(self._window_s, self._flush, key)
        return await future

    def _flush(self, key: BatchKey) -> None:
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._run(key, pending))
        self._tasks.add(task)  # keep a reference until done
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: BatchKey, pending: _Pending) -> None:
        self.batches_sent += 1
        try:
            results = await asyncio.to_thread(self._search, key, pending.items)
            if len(results) != len(pending.items):
                raise RuntimeError(f"search answered {len(results)} lists for {len(pending.items)} queries")
        except Exception as exc:
            for future in pending.futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, result in zip(pending.futures, results, strict=False):
            if not future.done():  # a caller may have been cancelled meanwhile
                future.set_result(result)
