"""The ingest queue's sweep and its idle workers (docs/reliability.md, F12)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from saq import Job

from ingest.config import IngestSettings
from ingest.queue import PatientQueue, create_queue
from services.cli.suite import Child, Suite, free_port


async def _clear(queue: PatientQueue) -> None:
    keys = [k async for k in queue.redis.scan_iter(match=f"*{queue.name}*")]
    if keys:
        await queue.redis.delete(*keys)


async def test_a_just_dequeued_job_is_swept_only_if_it_stays_unclaimed(redis_url: str) -> None:
    queue = create_queue(IngestSettings(redis_url=redis_url, queue_name=f"sweep-{free_port()}"))
    assert isinstance(queue, PatientQueue)
    active = queue.namespace("active")
    try:
        await queue.enqueue(Job("ingest_job", key="j1", retries=3, heartbeat=60))
        # saq's dequeue moves the job to the active list; a worker marks it active a moment
        # later. This sweep runs in between.
        job = await queue.dequeue(timeout=1)
        assert job is not None and job.status == "queued"
        assert await queue.sweep(lock=1, abort=0.5) == []
        assert await queue.redis.lrange(active, 0, -1) == [job.id.encode()]
        stored = await queue.job("j1")
        assert stored is not None and stored.status == "queued"  # not aborted under its worker

        # Still unclaimed at the next sweep: now it is swept, and retried rather than lost.
        await asyncio.sleep(1.1)  # the sweep lock lasts `lock` seconds
        assert await queue.sweep(lock=1, abort=0.5) == [job.id]
        assert await queue.redis.lrange(active, 0, -1) == []
        retried = await queue.job("j1")
        assert retried is not None and retried.status == "queued"
        assert await queue.redis.zscore(queue.namespace("incomplete"), job.id) is not None
    finally:
        await _clear(queue)
        await queue.disconnect()


def test_an_idle_worker_waits_without_errors(suite: Suite, tmp_path: Path) -> None:
    """redis-py 8 ends a read after 5 s: an idle worker's wait for jobs must end before that."""
    env = {**suite.service_env(), "QUARRY_INGEST_QUEUE_NAME": f"idle-{free_port()}"}
    log = tmp_path / "worker.log"
    worker = Child("idle-worker", [sys.executable, "-m", "ingest.worker"], env, None, log)
    worker.start()
    try:
        deadline = time.monotonic() + 120
        while "Worker starting" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(7)  # past the socket timeout, while no job comes
        assert worker.alive()
    finally:
        worker.stop()
    text = log.read_text()
    assert "Worker starting" in text
    assert "queue_unreachable" not in text and "TimeoutError" not in text, text[-2000:]
