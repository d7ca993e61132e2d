"""A worker whose Redis is unreachable waits between dequeues instead of spinning a core."""

from __future__ import annotations

import contextlib
import time

import pytest
from redis.exceptions import RedisError

from ingest.config import IngestSettings
from ingest.queue import create_queue
from services.cli.suite import free_port


async def test_dequeue_backs_off_while_redis_is_unreachable() -> None:
    # A real connection attempt to a port nothing listens on: refused at once, every time.
    queue = create_queue(IngestSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    attempts = 0
    deadline = time.monotonic() + 2.5
    try:
        while time.monotonic() < deadline:
            attempts += 1
            with pytest.raises((RedisError, OSError)):
                await queue.dequeue(timeout=1.0)
    finally:
        with contextlib.suppress(RedisError, OSError):  # closing also needs the dead Redis
            await queue.disconnect()
    # Pauses of 0.2, 0.4, 0.8, 1.6 s: a handful of attempts. Without them, thousands.
    assert 2 <= attempts <= 6


async def test_dequeue_works_and_resets_once_redis_answers(redis_url: str) -> None:
    queue = create_queue(IngestSettings(redis_url=redis_url, queue_name=f"backoff-{free_port()}"))
    try:
        assert await queue.dequeue(timeout=0.2) is None  # empty queue: no job, no error
    finally:
        await queue.disconnect()
