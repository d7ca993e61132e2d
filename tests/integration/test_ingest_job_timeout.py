"""A job past QUARRY_INGEST_JOB_TIMEOUT_S ends failed with job_timeout and is not retried (#27); the
limit holds across a job's attempts, and for `quarry ingest`. Real worker processes, the suite's Milvus
Lite, embedder and Redis."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ingest.config import IngestSettings
from ingest.jobs import JobInput, JobStore
from ingest.queue import create_queue, enqueue_ingest
from ingest.runner import IngestTimedOut, ingest_path
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


async def test_a_retried_job_gets_only_what_its_earlier_attempts_left(
    suite: Suite, redis_url: str, tmp_path: Path
) -> None:
    """Attempt 1 ran in a worker that died (its record says so: attempt 1, started long ago); the
    real worker that takes the job again gets the rest of the job's limit, not a fresh one."""
    queue_name = f"test-timeout-{uuid.uuid4().hex[:8]}"
    limit_s = 60
    env = {
        **suite.service_env(),
        "QUARRY_INGEST_QUEUE_NAME": queue_name,
        "QUARRY_INGEST_JOB_TIMEOUT_S": str(limit_s),
        "QUARRY_INGEST_BATCH_DOCUMENTS": "8",
    }
    settings = IngestSettings(redis_url=redis_url, queue_name=queue_name)
    redis = aioredis.Redis.from_url(redis_url)
    jobs = JobStore(redis, ttl_s=600)
    spent, part_spent = f"t_{uuid.uuid4().hex[:12]}", f"t_{uuid.uuid4().hex[:12]}"
    records = [{"_id": f"doc-{i}", "text": f"Sentence {i} about vectors. " * 60} for i in range(2000)]

    async def died_after(collection: str, records: list[dict[str, str]], seconds: float) -> str:
        job_id = await jobs.create(collection, [JobInput(r["_id"], record=r) for r in records])
        assert await jobs.start_attempt(job_id) == 1
        await redis.hset(f"quarry:ingest:job:{job_id}", "first_started_at", time.time() - seconds)
        return job_id

    # All of the limit used: the retry fails at once, before reading its inputs.
    used_up = await died_after(spent, records[:5], limit_s + 1)
    # All but 3 s used: the retry runs 3 s of a job that needs far more, then fails.
    three_left = await died_after(part_spent, records, limit_s - 3)
    worker = Child("timeout-worker", [sys.executable, "-m", "ingest.worker"], env, None, tmp_path / "w.log")
    worker.start()
    queue = create_queue(settings)
    milvus = connect_milvus(suite.milvus_uri)
    try:
        generation = await current_generation(redis, spent)
        for job_id in (used_up, three_left):
            await enqueue_ingest(queue, job_id, settings)
        view = await record_finished(jobs, used_up, timeout_s=120)
        assert view.state == "failed" and view.attempts == 2, view
        assert view.error.startswith(
            f"job_timeout: the job ran past its limit of {limit_s} s, over 2 attempts"
        )
        assert view.report.added == 0
        # An earlier attempt may have died between its writes and its bump.
        assert await current_generation(redis, spent) != generation
        view = await record_finished(jobs, three_left, timeout_s=120)
        assert view.state == "failed" and view.attempts == 2, view
        assert view.error.startswith(
            f"job_timeout: the job ran past its limit of {limit_s} s, over 2 attempts"
        )
        assert view.report.added < len(records)
        # It ended within the job's limit counted from attempt 1 (a fresh limit: about 57 s later);
        # the slack is for a slow machine.
        first = await jobs.first_started_at(three_left)
        assert first is not None and view.finished_at is not None
        assert view.finished_at - first < limit_s + 30, view.finished_at - first
        await asyncio.sleep(3)  # a retry would have started by now
        for job_id in (used_up, three_left):
            again = await jobs.get(job_id)
            assert again is not None and (again.state, again.attempts) == ("failed", 2), again
    finally:
        worker.stop()
        await queue.disconnect()
        await redis.aclose()
        for collection in (spent, part_spent):
            if milvus.has_collection(collection):
                milvus.drop_collection(collection)
        milvus.close()


async def test_quarry_ingest_stops_at_the_job_time_limit(
    suite: Suite, ingest_settings: IngestSettings, redis_url: str, collection_name: str, tmp_path: Path
) -> None:
    records = [{"_id": f"doc-{i}", "text": f"Sentence {i} about vectors. " * 60} for i in range(2000)]
    (tmp_path / "many.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    settings = ingest_settings.model_copy(update={"job_timeout_s": 3.0, "batch_documents": 8})
    redis = aioredis.Redis.from_url(redis_url)
    milvus = connect_milvus(suite.milvus_uri)
    try:
        generation = await current_generation(redis, collection_name)
        with pytest.raises(IngestTimedOut, match=r"^job_timeout: the run passed its limit of 3 s") as caught:
            await ingest_path(tmp_path, collection_name, settings, prune=True)
        assert caught.value.report.added < len(records)
        assert caught.value.report.deleted == 0  # not pruned
        assert await current_generation(redis, collection_name) != generation  # no stale cache
    finally:
        await redis.aclose()
        if milvus.has_collection(collection_name):
            milvus.drop_collection(collection_name)
        milvus.close()
