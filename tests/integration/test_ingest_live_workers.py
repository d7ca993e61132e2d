"""`live_workers` reads saq's worker registry in the real Redis."""

from __future__ import annotations

from ingest.config import IngestSettings
from ingest.queue import live_workers
from services.cli.suite import free_port


async def test_no_redis_means_no_live_worker() -> None:
    unreachable = IngestSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert await live_workers(unreachable) == 0


async def test_a_queue_nobody_serves_has_no_live_worker(redis_url: str) -> None:
    assert await live_workers(IngestSettings(redis_url=redis_url, queue_name="quarry-nobody")) == 0
