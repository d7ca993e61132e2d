"""A worker killed with SIGKILL mid-job: another worker finishes it, no duplicate, no missing chunk."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path

import redis.asyncio as aioredis

from ingest.chunking import Chunker
from ingest.collections import CollectionConfig, CollectionConfigs
from ingest.config import IngestSettings
from ingest.jobs import JobInput, JobStore
from ingest.loaders import record_document
from ingest.queue import create_queue, enqueue_ingest
from services.cli.suite import Child, Suite
from services.common.milvus_connect import connect_milvus

_WORDS = [
    "vector",
    "index",
    "chunk",
    "embedding",
    "query",
    "cache",
    "generation",
    "milvus",
    "redis",
    "worker",
]


def _records(n: int) -> list[dict[str, str]]:
    return [
        {
            "_id": f"doc-{i}",
            "title": f"Document {i}",
            "text": " ".join(f"{_WORDS[(i + j) % len(_WORDS)]} {i}-{j}." for j in range(30)),
        }
        for i in range(n)
    ]


async def test_sigkill_mid_job_is_finished_by_another_worker(
    suite: Suite, redis_url: str, collection_name: str, tmp_path: Path
) -> None:
    queue_name = f"test-crash-{uuid.uuid4().hex[:8]}"
    env = {
        **suite.service_env(),
        "QUARRY_INGEST_QUEUE_NAME": queue_name,
        "QUARRY_INGEST_JOB_HEARTBEAT_S": "6",
        "QUARRY_INGEST_SWEEP_INTERVAL_S": "1",
        "QUARRY_INGEST_BATCH_DOCUMENTS": "8",
    }
    settings = IngestSettings(redis_url=redis_url, queue_name=queue_name, job_heartbeat_s=6)
    records = _records(120)
    redis = aioredis.Redis.from_url(redis_url)
    jobs = JobStore(redis, ttl_s=600)
    await CollectionConfigs(redis, CollectionConfig(200, 32)).set(collection_name, CollectionConfig(48, 8))
    job_id = await jobs.create(collection_name, [JobInput(r["_id"], record=r) for r in records])
    queue = create_queue(settings)
    await enqueue_ingest(queue, job_id, settings)

    def worker(n: int) -> Child:
        child = Child(
            f"worker{n}", [sys.executable, "-m", "ingest.worker"], env, None, tmp_path / f"worker{n}.log"
        )
        child.start()
        return child

    first = worker(1)
    second: Child | None = None
    milvus = connect_milvus(suite.milvus_uri)
    try:
        # Deadlines only stop a broken run from hanging; nothing here asserts on time.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # wait until the job is under way, then kill it hard
            view = await jobs.get(job_id)
            assert view is not None
            if view.report.added >= 16:
                break
            await asyncio.sleep(0.1)
        first.kill()
        killed_at = await jobs.get(job_id)
        assert killed_at is not None and killed_at.state == "running"
        assert 16 <= killed_at.report.added < len(records), "the kill must land mid-job"

        second = worker(2)
        deadline = time.monotonic() + 500
        while time.monotonic() < deadline:
            view = await jobs.get(job_id)
            assert view is not None
            if view.state in ("completed", "failed"):
                break
            await asyncio.sleep(0.1)
        assert view is not None and view.state == "completed", view
        assert view.attempts >= 2
        assert view.report.failed == 0
        assert view.report.added + view.report.unchanged == len(records)
        assert view.report.added >= killed_at.report.added

        chunker = Chunker(48, 8)
        expected = {c.chunk_id for r in records for c in chunker.split(record_document(r, "test"))}
        rows = milvus.query(
            collection_name, filter="", output_fields=["chunk_id"], limit=16_000, consistency_level="Strong"
        )
        stored = [r["chunk_id"] for r in rows]
        assert len(stored) == len(set(stored)) == len(expected)
        assert set(stored) == expected
        count = milvus.query(
            collection_name, filter="", output_fields=["count(*)"], consistency_level="Strong"
        )
        assert count[0]["count(*)"] == len(expected)
    finally:
        first.kill()
        if second is not None:
            second.stop()
        milvus.drop_collection(collection_name)
        milvus.close()
        await queue.disconnect()
        keys = [k async for k in redis.scan_iter(match=f"*{queue_name}*")]
        keys += [k async for k in redis.scan_iter(match=f"quarry:ingest:job:{job_id}*")]
        keys += [f"quarry:ingest:collection:{collection_name}".encode()]
        await redis.delete(*keys)
        await redis.aclose()
