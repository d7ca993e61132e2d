"""Caps with safe defaults (#27): characters and chunks per document, warnings kept per job, documents per
job (at the ingest API's door, in its worker and in `quarry ingest`). Real Milvus Lite, embedder and Redis;
records per JSONL file are covered with the loaders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from ingest.config import IngestSettings
from ingest.jobs import JobInput, JobStore
from ingest.runner import IngestRefused, ingest_path
from services.cli.suite import Child, Suite, free_port
from services.common.milvus_connect import connect_milvus
from services.common.milvus_expr import field_equals
from tests.integration.ingest_jobs import finished


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


# ------------------------------------------------------------------ documents per job

_CAP = 3


@pytest.fixture(scope="module")
def capped_ingest(suite: Suite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ingest API and worker with QUARRY_INGEST_MAX_JOB_DOCUMENTS=3, on a queue of their own;
    the suite's Milvus Lite, embedder and Redis. Yields the API's URL."""
    logs = tmp_path_factory.mktemp("capped-ingest")
    port = free_port()
    env = {
        **suite.service_env(),
        "QUARRY_INGEST_PORT": str(port),
        "QUARRY_INGEST_QUEUE_NAME": f"test-doc-cap-{uuid.uuid4().hex[:8]}",
        "QUARRY_INGEST_MAX_JOB_DOCUMENTS": str(_CAP),
    }
    url = f"http://127.0.0.1:{port}"
    api = Child(
        "capped-ingest", [sys.executable, "-m", "ingest.api"], env, f"{url}/health/ready", logs / "a.log"
    )
    worker = Child("capped-worker", [sys.executable, "-m", "ingest.worker"], env, None, logs / "w.log")
    api.start()
    worker.start()
    try:
        api.wait_ready(time.monotonic() + 120)
        yield url
    finally:
        worker.stop()
        api.stop()


def _records(n: int, prefix: str = "r") -> list[dict[str, str]]:
    return [
        {"_id": f"{prefix}{i}", "text": f"Record {i} of the capped job, about cap testing."}
        for i in range(1, n + 1)
    ]


def _jsonl(records: list[dict[str, str]]) -> bytes:
    return "\n".join(json.dumps(r) for r in records).encode()


async def _job_count(api: httpx.AsyncClient, collection: str) -> int:
    listed = await api.get("/v1/jobs", params={"collection": collection})
    return int(listed.json()["total"])


def _assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "too_many_documents", error
    assert f"over the cap of {_CAP} documents per job" in error["message"], error
    assert error["request_id"]


async def test_a_request_past_the_document_cap_is_refused_at_the_door(
    capped_ingest: str, collection_name: str, milvus: Any
) -> None:
    async with httpx.AsyncClient(base_url=capped_ingest, http2=True, http1=False, timeout=60) as api:
        records = await api.post(
            f"/v1/collections/{collection_name}/documents", json={"documents": _records(_CAP + 1)}
        )
        _assert_refused(records)
        files = [
            ("files", (f"f{i}.txt", b"A file of the capped job.", "text/plain")) for i in range(_CAP + 1)
        ]
        upload = await api.post(f"/v1/collections/{collection_name}/documents", files=files)
        _assert_refused(upload)
        assert await _job_count(api, collection_name) == 0  # nothing queued
        at_cap = await api.post(
            f"/v1/collections/{collection_name}/documents", json={"documents": _records(_CAP)}
        )
        assert at_cap.status_code == 202, at_cap.text
        job = await finished(api, at_cap.json()["job_id"])
    assert (job["state"], job["counts"]["added"], job["errors"]) == ("completed", _CAP, []), job


async def test_jsonl_records_past_the_document_cap_fail_in_the_worker(
    capped_ingest: str, collection_name: str, milvus: Any
) -> None:
    # 1 text file + 5 records: the records fill the cap after 2; the file after the JSONL is not read.
    files = [
        ("files", ("a.txt", b"A text file that fits under the cap.", "text/plain")),
        ("files", ("b.jsonl", _jsonl(_records(5, "b")), "application/octet-stream")),
        ("files", ("c.txt", b"A text file after the cap is reached.", "text/plain")),
    ]
    async with httpx.AsyncClient(base_url=capped_ingest, http2=True, http1=False, timeout=60) as api:
        accepted = await api.post(f"/v1/collections/{collection_name}/documents", files=files)
        assert accepted.status_code == 202, accepted.text
        job = await finished(api, accepted.json()["job_id"])
    assert job["state"] == "completed" and job["attempts"] == 1, job
    assert job["counts"]["added"] == _CAP, job
    errors = {e["doc_id"]: e["error"] for e in job["errors"]}
    assert set(errors) == {"b.jsonl (documents 3-5)", "c.txt"}, errors
    assert errors["b.jsonl (documents 3-5)"].startswith("3 not indexed (ids 'b3' to 'b5')"), errors
    assert errors["c.txt"].startswith("not loaded: the job reached its cap of 3 documents"), errors
    rows = milvus.query(
        collection_name, filter="", output_fields=["doc_id"], limit=100, consistency_level="Strong"
    )
    assert {r["doc_id"] for r in rows} == {"a.txt", "b1", "b2"}


async def test_quarry_ingest_holds_the_document_cap(
    tmp_path: Path, ingest_settings: IngestSettings, collection_name: str, milvus: Any
) -> None:
    settings = ingest_settings.model_copy(update={"max_job_documents": _CAP})
    many = tmp_path / "many"
    many.mkdir()
    for i in range(_CAP + 1):
        (many / f"f{i}.txt").write_text(f"File {i} of a folder past the cap.")
    with pytest.raises(IngestRefused, match=f"holds 4 files, over the cap of {_CAP} documents per job"):
        await ingest_path(many, collection_name, settings)
    assert not milvus.has_collection(collection_name)  # refused before anything was written

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.txt").write_text("A text file that fits under the cap.")
    (mixed / "b.jsonl").write_bytes(_jsonl(_records(5, "b")))
    report = await ingest_path(mixed, collection_name, settings, prune=True)
    assert (report.added, report.failed) == (_CAP, 1), report
    assert report.errors["b.jsonl (documents 3-5)"].startswith("3 not indexed (ids 'b3' to 'b5')")
    # Records past the cap were never read: pruning could not tell them from deleted ones.
    assert any(w.startswith("nothing pruned") for w in report.warnings), report.warnings


def test_the_quarry_ingest_command_refuses_a_folder_past_the_cap(
    tmp_path: Path, ingest_settings: IngestSettings
) -> None:
    for i in range(_CAP + 1):
        (tmp_path / f"f{i}.txt").write_text(f"File {i}.")
    env = {
        **os.environ,
        "QUARRY_INGEST_MAX_JOB_DOCUMENTS": str(_CAP),
        "QUARRY_INGEST_REDIS_URL": ingest_settings.redis_url,
    }
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from services.cli.main import main; main()",
            "ingest",
            str(tmp_path),
            "--collection",
            "t_never",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "refused" in done.stdout and f"over the cap of {_CAP} documents per job" in " ".join(
        done.stdout.split()
    )
