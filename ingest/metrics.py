"""Ingest API metrics, read from the shared Redis job queue at each scrape of ``/metrics``."""

from __future__ import annotations

import asyncio

from prometheus_client import Gauge
from redis.exceptions import RedisError
from saq.queue.redis import RedisQueue

# The same figure from every replica: the queue is shared, so an alert should read one of them.
QUEUE_DEPTH = Gauge(
    "quarry_ingest_queue_depth",
    "Ingest jobs waiting for a worker (not retries waiting out their delay); NaN while Redis is unreadable.",
)
JOBS_RUNNING = Gauge(
    "quarry_ingest_jobs_running",
    "Ingest jobs a worker has taken and not finished; NaN while Redis is unreadable.",
)
# A scrape must answer even when Redis hangs: past this, the gauges read NaN.
READ_TIMEOUT_S = 1.0


async def read_queue(queue: RedisQueue) -> None:
    """Sets the gauges from the queue's lists in Redis."""
    queued: float
    running: float
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            queued, running = await queue.count("queued"), await queue.count("active")
    except (RedisError, OSError, TimeoutError):  # readiness names the outage; a scrape still answers
        queued = running = float("nan")
    QUEUE_DEPTH.set(queued)
    JOBS_RUNNING.set(running)
