"""The Redis job queue (saq) between the ingest API and its workers."""

from __future__ import annotations

import asyncio
import contextlib

from redis.exceptions import RedisError
from saq import Job, Queue
from saq.queue.redis import RedisQueue

from ingest.config import IngestSettings
from services.common.logs import get_logger

INGEST_TASK = "ingest_job"
_log = get_logger(__name__)

# Pause between dequeue attempts while Redis is unreachable: doubling, capped.
_FIRST_PAUSE_S = 0.2
_MAX_PAUSE_S = 5.0


class PatientQueue(RedisQueue):
    """saq's Redis queue, whose dequeue backs off while Redis is unreachable.

    saq's worker starts its next dequeue the moment one fails and logs a traceback each
    time, so with Redis down every worker slot spun a whole core: enough, on a small
    machine, to starve the LLM beside it (24 tokens took 80 s). Jobs are safe in Redis
    meanwhile; the worker resumes on the first dequeue after Redis is back.
    """

    _pause_s = 0.0

    async def dequeue(self, timeout: float = 0.0, poll_interval: float = 0.0) -> Job | None:  # noqa: ASYNC109  (saq's signature)
        try:
            job = await super().dequeue(timeout=timeout, poll_interval=poll_interval)
        except (RedisError, OSError) as exc:
            if self._pause_s == 0.0:
                _log.warning("queue_unreachable", error=f"{type(exc).__name__}: {exc}"[:300])
            self._pause_s = min(_MAX_PAUSE_S, max(_FIRST_PAUSE_S, self._pause_s * 2))
            await asyncio.sleep(self._pause_s)
            raise
        if self._pause_s:
            _log.info("queue_reachable_again")
            self._pause_s = 0.0
        return job


def create_queue(settings: IngestSettings) -> RedisQueue:
    return PatientQueue.from_url(settings.redis_url, name=settings.queue_name)


async def enqueue_ingest(queue: Queue, job_id: str, settings: IngestSettings) -> None:
    await queue.enqueue(
        Job(
            INGEST_TASK,
            kwargs={"job_id": job_id},
            key=job_id,  # enqueueing the same job twice runs it once
            timeout=0,  # a big job may run long; liveness is the heartbeat's business
            heartbeat=settings.job_heartbeat_s,
            retries=settings.job_retries,
            retry_delay=1.0,
            retry_backoff=True,
            ttl=settings.job_ttl_s,
        )
    )


async def live_workers(settings: IngestSettings) -> int:
    """Workers that reported in within saq's worker-info interval (about 10 s)."""
    queue = create_queue(settings)
    try:
        info = await queue.info()
    except (RedisError, OSError):
        return 0
    finally:
        with contextlib.suppress(RedisError, OSError):  # closing talks to Redis as well
            await queue.disconnect()
    return len(info["workers"])
