"""One poison document fails alone: the job completes, good documents are searchable, every bad
one is named in the job's errors (#27). Real API, worker, Milvus Lite and Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.cli.suite import Suite
from services.common.http_client import create_http2_client
from services.common.milvus_expr import field_equals
from tests.integration.ingest_jobs import finished
from tests.integration.test_ingest_sandbox import HTML_BOMB
from tests.pdf_files import pdf_of_pages

_DEEP = "[" * 200_000 + "]" * 200_000


@pytest.fixture
async def api(suite: Suite) -> AsyncIterator[httpx.AsyncClient]:
    client = create_http2_client(suite.url("ingest"), timeout_s=60)
    yield client
    await client.aclose()


def _stored_ids(milvus: Any, collection: str, doc_id: str) -> list[str]:
    rows = milvus.query(
        collection,
        filter=field_equals("doc_id", doc_id),
        output_fields=["doc_id"],
        consistency_level="Strong",
    )
    return [r["doc_id"] for r in rows]


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record)


async def test_poison_files_and_records_fail_alone(
    api: httpx.AsyncClient, milvus: Any, collection_name: str
) -> None:
    mixed = "\n".join(
        [
            _line({"_id": "j-good", "text": "A good record about hybrid search."}),
            _DEEP,
            _line({"_id": "nul\u0000id", "text": "An id with a NUL."}),
            _line({"_id": "new\nline", "text": "An id with a newline."}),
            _line({"_id": "x" * 600, "text": "An id too long."}),
            _line({"_id": "j-good-2", "text": "Another good record, about chunking."}),
            '{"_id": "sur-text", "text": "legal JSON, but no UTF-8 can hold \\ud800 alone"}',
        ]
    )
    files = [
        ("files", ("good.md", b"# Good\nA markdown file about vectors.", "text/markdown")),
        ("files", ("mixed.jsonl", mixed.encode(), "application/jsonl")),
        ("files", ("deep.jsonl", _DEEP.encode(), "application/jsonl")),
        ("files", ("deep.html", b"<div>" * 100_000 + b"deep text" + b"</div>" * 100_000, "text/html")),
        ("files", ("empty.txt", b"", "text/plain")),
    ]
    accepted = await api.post(f"/v1/collections/{collection_name}/documents", files=files)
    assert accepted.status_code == 202, accepted.text
    job = await finished(api, accepted.json()["job_id"])
    assert job["state"] == "completed", job
    assert job["attempts"] == 1  # a document's content is never retried
    errors = {e["doc_id"]: e["error"] for e in job["errors"]}
    assert "RecursionError" in errors["mixed.jsonl line 2"]
    assert "control character (U+0000)" in errors["mixed.jsonl line 3"]
    assert "control character (U+000A)" in errors["mixed.jsonl line 4"]
    assert "over the cap of 512" in errors["mixed.jsonl line 5"]
    assert "RecursionError" in errors["deep.jsonl"]
    assert "no text" in errors["empty.txt"]
    assert "UnicodeEncodeError" in errors["sur-text"]  # loaded, then failed alone when indexed
    good = {"good.md", "j-good", "j-good-2"}
    assert not good & set(errors)
    # Deeply nested HTML either parses or fails alone; it never takes the job with it.
    html_failed = "deep.html" in errors
    assert job["counts"]["added"] == len(good) + (not html_failed)
    assert job["counts"]["failed"] == 7 + html_failed
    for doc_id in good:
        assert _stored_ids(milvus, collection_name, doc_id), doc_id


async def test_awkward_but_valid_ids_round_trip(
    api: httpx.AsyncClient, milvus: Any, collection_name: str
) -> None:
    ids = ["a%2Fb", "a b", "ü", "x" * 200, 'q"uote', "back\\slash", "a/b", "ß∂ƒ 漢字"]
    records = [{"_id": doc_id, "text": f"Text of the document number {n}."} for n, doc_id in enumerate(ids)]
    accepted = await api.post(f"/v1/collections/{collection_name}/documents", json={"documents": records})
    assert accepted.status_code == 202, accepted.text
    job = await finished(api, accepted.json()["job_id"])
    assert job["state"] == "completed" and job["counts"]["added"] == len(ids), job
    for doc_id in ids:
        assert _stored_ids(milvus, collection_name, doc_id) == [doc_id]
    # Again: every one is found by its id and left alone.
    again = await api.post(f"/v1/collections/{collection_name}/documents", json={"documents": records})
    job = await finished(api, again.json()["job_id"])
    assert job["counts"]["unchanged"] == len(ids), job


async def test_a_pdf_past_the_page_cap_is_truncated_with_a_warning(
    api: httpx.AsyncClient, milvus: Any, collection_name: str
) -> None:
    pdf = pdf_of_pages(501, "Page number {n} of the long manual.")
    files = [("files", ("long.pdf", pdf, "application/pdf"))]
    accepted = await api.post(f"/v1/collections/{collection_name}/documents", files=files)
    assert accepted.status_code == 202, accepted.text
    job = await finished(api, accepted.json()["job_id"])
    assert job["state"] == "completed" and job["counts"]["added"] == 1, job
    assert job["warnings"] == [
        "long.pdf: truncated: only the first 500 of 501 pages were read (the cap per PDF)"
    ]
    rows = milvus.query(
        collection_name,
        filter=field_equals("doc_id", "long.pdf"),
        output_fields=["text"],
        consistency_level="Strong",
    )
    text = " ".join(r["text"] for r in rows)
    assert "number 500 of" in text and "number 501 of" not in text


async def test_a_file_past_the_loader_memory_limit_fails_alone_on_the_worker(
    api: httpx.AsyncClient, milvus: Any, collection_name: str
) -> None:
    files = [
        ("files", ("bomb.html", HTML_BOMB, "text/html")),
        ("files", ("after.md", b"# After\nA file loaded after the bomb, about recall.", "text/markdown")),
    ]
    accepted = await api.post(f"/v1/collections/{collection_name}/documents", files=files)
    assert accepted.status_code == 202, accepted.text
    job = await finished(api, accepted.json()["job_id"])
    assert job["state"] == "completed" and job["attempts"] == 1, job
    errors = {e["doc_id"]: e["error"] for e in job["errors"]}
    assert "memory limit of 768 MiB" in errors["bomb.html"], errors
    assert job["counts"]["added"] == 1
    assert _stored_ids(milvus, collection_name, "after.md") == ["after.md"]
