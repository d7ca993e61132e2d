"""Caps with safe defaults (#27): characters and chunks per document, warnings kept per job. Real Milvus Lite,
embedder and Redis; records per JSONL file are covered with the loaders."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ingest.config import IngestSettings
from ingest.jobs import JobInput, JobStore
from ingest.runner import ingest_path
from services.common.milvus_connect import connect_milvus
from services.common.milvus_expr import field_equals


@pytest.mark.parametrize(
    ("cap", "text", "reason"),
    [
        (
            {"max_document_chunks": 3},
            " ".join(f"Sentence number {i} about the index." for i in range(400)),
            "over the cap of 3",
        ),
        # One sentence of words, the costly kind to split: refused before the splitter sees it.
        ({"max_document_chars": 100}, "word " * 1000, "has 5,000 characters, over the cap of 100"),
    ],
)
async def test_a_document_past_a_cap_fails_alone(
    tmp_path: Path,
    ingest_settings: IngestSettings,
    collection_name: str,
    cap: dict[str, int],
    text: str,
    reason: str,
) -> None:
    (tmp_path / "long.txt").write_text(text)
    (tmp_path / "short.txt").write_text("A short note.")
    report = await ingest_path(tmp_path, collection_name, ingest_settings.model_copy(update=cap))
    milvus = connect_milvus(ingest_settings.milvus_uri)
    try:
        assert (report.added, report.failed) == (1, 1)
        assert reason in report.errors["long.txt"]
        stored = milvus.query(
            collection_name,
            filter=field_equals("doc_id", "long.txt"),
            output_fields=["chunk_id"],
            consistency_level="Strong",
        )
        assert stored == []  # failed whole, not cut short
    finally:
        milvus.drop_collection(collection_name)
        milvus.close()


async def test_a_job_keeps_up_to_its_cap_of_warnings_and_counts_the_rest(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    jobs = JobStore(redis, ttl_s=60, max_warnings=3)
    job_id = await jobs.create("c_caps", [JobInput("a.txt", data=b"x")])
    try:
        await jobs.warn(job_id, ["w1", "w2"])
        await jobs.warn(job_id, ["w3", "w4", "w5", "w6"])
        view = await jobs.get(job_id)
        assert view is not None
        assert view.report.warnings == ["w1", "w2", "w3", "3 more warnings were not kept (the cap per job)"]
        assert await redis.llen(f"quarry:ingest:job:{job_id}:warnings") == 3
    finally:
        await redis.delete(*[k async for k in redis.scan_iter(match=f"quarry:ingest:job:{job_id}*")])
        await redis.aclose()
