"""Jobs never lose documents silently, and no crash point leaves cached answers stale (#27).

Against the suite's real worker, Milvus Lite and Redis. The crashed attempt runs in this
process, with a store that performs the stale-chunk delete and then dies, as a SIGKILL there would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis

from ingest.config import IngestSettings
from ingest.indexer import Indexer
from ingest.jobs import JobInput, JobStore, JobView
from ingest.loaders import record_document
from ingest.pipeline import index_documents
from ingest.queue import create_queue, enqueue_ingest
from ingest.resources import IngestResources, open_resources
from ingest.store import ChunkStore
from services.cli.suite import Suite
from services.common.corpus_generation import current_generation
from services.common.milvus_connect import connect_milvus
from tests.integration.ingest_jobs import record_finished


@pytest.fixture
def settings(suite: Suite, ingest_settings: IngestSettings) -> IngestSettings:
    """The suite's own queue, so its worker runs what is enqueued here."""
    return ingest_settings.model_copy(update={"queue_name": suite.service_env()["QUARRY_INGEST_QUEUE_NAME"]})


@pytest.fixture
async def resources(settings: IngestSettings, collection_name: str) -> AsyncIterator[IngestResources]:
    async with open_resources(settings) as res:
        yield res
        if await res.store.exists(collection_name):
            await res.store.drop_collection(collection_name)


async def _run_on_worker(settings: IngestSettings, job_id: str, jobs: JobStore) -> JobView:
    queue = create_queue(settings)
    try:
        await enqueue_ingest(queue, job_id, settings)
    finally:
        await queue.disconnect()
    return await record_finished(jobs, job_id, timeout_s=180)


async def test_a_job_whose_inputs_were_evicted_fails_loudly(
    settings: IngestSettings, resources: IngestResources, collection_name: str, redis_url: str
) -> None:
    record = {"_id": "doc", "text": "A document whose input is evicted before it runs."}
    job_id = await resources.jobs.create(collection_name, [JobInput("doc", record=record)])
    raw = aioredis.Redis.from_url(redis_url)
    try:
        # What Redis under volatile-lru does to a queued job's inputs.
        assert await raw.delete(f"quarry:ingest:job:{job_id}:inputs") == 1
    finally:
        await raw.aclose()
    view = await _run_on_worker(settings, job_id, resources.jobs)
    assert view.state == "failed", view
    assert view.error.startswith("inputs_missing"), view.error
    assert view.attempts == 1  # not retried: no later attempt can find them either
    assert not await resources.store.exists(collection_name)  # nothing written


class _WorkerKilled(BaseException):
    """Not an Exception: nothing in the worker handles it, as nothing outlives a SIGKILL."""


class _DiesAfterStaleDelete(ChunkStore):
    async def delete_chunks(self, collection: str, chunk_ids: Sequence[str]) -> None:
        await super().delete_chunks(collection, chunk_ids)
        raise _WorkerKilled


def _chunk_texts(suite: Suite, collection: str) -> list[str]:
    milvus = connect_milvus(suite.milvus_uri)
    try:
        rows: list[dict[str, Any]] = milvus.query(
            collection, filter="", output_fields=["text"], limit=100, consistency_level="Strong"
        )
    finally:
        milvus.close()
    return sorted(r["text"] for r in rows)


async def test_a_crash_between_stale_delete_and_bump_still_moves_the_generation(
    suite: Suite, settings: IngestSettings, resources: IngestResources, collection_name: str
) -> None:
    first = {"_id": "doc", "text": "The cache is kept for an hour."}
    changed = {"_id": "doc", "text": "The cache is kept for a day, and bumped on every change."}
    jobs = resources.jobs
    done = await _run_on_worker(
        settings, await jobs.create(collection_name, [JobInput("doc", record=first)]), jobs
    )
    assert done.state == "completed" and done.report.added == 1
    before = await current_generation(resources.redis, collection_name)  # rag caches answers under it

    # Attempt 1 of the update, killed right after the stale chunks are deleted.
    job_id = await jobs.create(collection_name, [JobInput("doc", record=changed)])
    assert await jobs.start_attempt(job_id) == 1
    store = _DiesAfterStaleDelete(settings.milvus_uri)
    dying = Indexer(store, resources.embeddings, resources.redis, settings.embedding_dim)
    chunker = await resources.chunker(collection_name)
    try:
        with pytest.raises(_WorkerKilled):
            await index_documents(
                dying, collection_name, chunker, [record_document(changed, "doc")], 8, _ignore
            )
    finally:
        store.close()
    assert _chunk_texts(suite, collection_name) == [changed["text"]]  # the new text is all there is
    assert (
        await current_generation(resources.redis, collection_name) == before
    )  # and no bump: the crash point

    # The sweep hands the job to a worker again: every document now reads unchanged, yet the
    # re-run moves the generation, so an answer cached from the old text is never served.
    view = await _run_on_worker(settings, job_id, jobs)
    assert view.state == "completed" and view.attempts == 2, view
    assert view.report.unchanged == 1
    assert await current_generation(resources.redis, collection_name) > before


async def _ignore(outcomes: dict[str, Any]) -> None:
    return None
