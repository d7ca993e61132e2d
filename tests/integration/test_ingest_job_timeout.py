"""A job past QUARRY_INGEST_JOB_TIMEOUT_S ends failed with job_timeout and is not retried (#27).
A real worker process with a 3 s limit, the suite's Milvus Lite, embedder and Redis."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import redis.asyncio as aioredis

from ingest.config import IngestSettings
from ingest.jobs import JobInput, JobStore
from ingest.queue import create_queue, enqueue_ingest
from services.cli.suite import Child, Suite
from services.common.corpus_generation import current_generation
from services.common.milvus_connect import connect_milvus
from tests.integration.ingest_jobs import record_finished


async def test_a_job_past_its_time_limit_fails_once_with_job_timeout(
    suite: Suite, redis_url: str, collection_name: str, tmp_path: Path
) -> None:
    queue_name = f"test-timeout-{uuid.uuid4().hex[:8]}"
    env = {
        **suite.service_env(),
        "QUARRY_INGEST_QUEUE_NAME": queue_name,
        "QUARRY_INGEST_JOB_TIMEOUT_S": "3",
        "QUARRY_INGEST_BATCH_DOCUMENTS": "8",
    }
    settings = IngestSettings(redis_url=redis_url, queue_name=queue_name)
    # Far more than 3 s of embedding on any machine these tests run on.
    records = [{"_id": f"doc-{i}", "text": f"Sentence {i} about vectors. " * 60} for i in range(2000)]
    redis = aioredis.Redis.from_url(redis_url)
    jobs = JobStore(redis, ttl_s=600)
    job_id = await jobs.create(collection_name, [JobInput(r["_id"], record=r) for r in records])
    worker = Child("timeout-worker", [sys.executable, "-m", "ingest.worker"], env, None, tmp_path / "w.log")
    worker.start()
    queue = create_queue(settings)
    milvus = connect_milvus(suite.milvus_uri)
    try:
        generation = await current_generation(redis, collection_name)
        await enqueue_ingest(queue, job_id, settings)
        view = await record_finished(jobs, job_id, timeout_s=120)
        assert view.state == "failed", view
        assert view.error.startswith("job_timeout: the job ran past its limit of 3 s"), view.error
        assert view.report.added < len(records)
        assert await current_generation(redis, collection_name) != generation  # no stale cache
        await asyncio.sleep(3)  # a retry would have started by now (saq retries at once)
        again = await jobs.get(job_id)
        assert again is not None and (again.state, again.attempts) == ("failed", 1), again
    finally:
        worker.stop()
        await queue.disconnect()
        await redis.aclose()
        if milvus.has_collection(collection_name):
            milvus.drop_collection(collection_name)
        milvus.close()
