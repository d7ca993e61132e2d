"""The Redis job queue (saq) between the ingest API and its workers."""

from __future__ import annotations

import asyncio
import contextlib

from redis.exceptions import RedisError
from saq import Job, Queue
from saq.job import Status
from saq.queue.redis import RedisQueue

from ingest.config import IngestSettings
from services.common.logs import get_logger

INGEST_TASK = "ingest_job"
_log = get_logger(__name__)

# saq 0.26.4's sweep script: takes the sweep lock, then returns the active list's jobs.
_SWEEP_SCRIPT = """
local id_jobs = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SETEX', KEYS[1], ARGV[1], 1)
    for i, v in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
        id_jobs[i] = {v, redis.call('GET', v)}
    end
end
return id_jobs
"""
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
    # Active-list ids the last sweep found still marked queued (see sweep).
    _just_dequeued: frozenset[bytes] = frozenset()

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

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        """saq's sweep (0.26.4), except that a job only just dequeued is left to the next one.

        saq moves a job onto the active list and marks it active a moment later. A sweep in
        between took it for a stale one: it aborted it and took it off the active list while
        a worker ran it, so if that worker then died, no sweep could find the job again and it
        was lost (docs/reliability.md, F12). A job on the active list still marked queued is
        now swept only when the previous sweep of this worker found it so too; sweeps are
        seconds apart, the window is a Redis round trip.
        """
        if not self._cleanup_script:
            self._cleanup_script = self.redis.register_script(_SWEEP_SCRIPT)
        id_jobs = await self._cleanup_script(keys=[self._sweep, self._active], args=[lock], client=self.redis)
        swept: list[bytes] = []
        queued_now = set()
        for job_id, job_bytes in id_jobs:
            job = self.deserialize(job_bytes)
            if job is None:
                swept.append(job_id)
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.lrem(self._active, 0, job_id)
                    pipe.zrem(self._incomplete, job_id)
                    await pipe.execute()
                _log.info("sweeping_missing_job", job_id=job_id.decode("utf-8"))
                continue
            if job.status == Status.QUEUED and job_id not in self._just_dequeued:
                queued_now.add(job_id)
                continue
            if job.status != Status.ACTIVE or job.stuck:
                _log.info("sweeping_job", job=job.key, status=str(job.status))
                swept.append(job_id)
                await self.abort(job, error=self.swept_error_message)
                with contextlib.suppress(TimeoutError, RedisError):
                    await job.refresh(abort)
                if job.retryable:
                    await self.retry(job, error=self.swept_error_message)
                else:
                    await self.finish(job, Status.ABORTED, error=self.swept_error_message)
        # An empty script result also means another worker holds the sweep lock: keep the memory.
        if id_jobs:
            self._just_dequeued = frozenset(queued_now)
        return [job_id.decode("utf-8") for job_id in swept]


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
