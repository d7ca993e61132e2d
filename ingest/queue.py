"""The Redis job queue (saq) between the ingest API and its workers."""

from __future__ import annotations

from saq import Job, Queue

from ingest.config import IngestSettings

INGEST_TASK = "ingest_job"


def create_queue(settings: IngestSettings) -> Queue:
    return Queue.from_url(settings.redis_url, name=settings.queue_name)


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
