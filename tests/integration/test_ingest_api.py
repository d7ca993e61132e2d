"""The ingest API over real HTTP/2 with the suite's worker: collections, jobs, documents, errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fpdf import FPDF

from services.cli.suite import Suite
from services.common.http_client import create_http2_client
from services.common.milvus_connect import connect_milvus
from services.common.milvus_expr import field_equals
from tests.conftest import KeyFactory
from tests.integration.ingest_jobs import finished


@pytest.fixture
async def api(suite: Suite) -> AsyncIterator[httpx.AsyncClient]:
    client = create_http2_client(suite.url("ingest"), timeout_s=60)
    yield client
    await client.aclose()


def _pdf(text: str) -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.multi_cell(0, 10, text)
    return bytes(pdf.output())


def _assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.http_version == "HTTP/2"
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["request_id"]


async def test_collection_lifecycle(api: httpx.AsyncClient, collection_name: str) -> None:
    created = await api.post(
        "/v1/collections", json={"name": collection_name, "chunk_tokens": 64, "chunk_overlap_tokens": 8}
    )
    assert created.status_code == 201, created.text
    assert created.json()["chunk_tokens"] == 64
    _assert_error(await api.post("/v1/collections", json={"name": collection_name}), 409, "collection_exists")
    listed = (await api.get("/v1/collections")).json()["collections"]
    assert collection_name in [c["name"] for c in listed]
    generation = (await api.get(f"/v1/collections/{collection_name}")).json()["generation"]
    assert (await api.delete(f"/v1/collections/{collection_name}")).status_code == 200
    _assert_error(await api.get(f"/v1/collections/{collection_name}"), 404, "collection_not_found")
    _assert_error(await api.delete(f"/v1/collections/{collection_name}"), 404, "collection_not_found")
    # Dropping bumps the generation: answers cached from the dropped corpus are never served.
    again = await api.post("/v1/collections", json={"name": collection_name})
    assert again.json()["generation"] > generation
    await api.delete(f"/v1/collections/{collection_name}")


async def test_files_job_reports_each_document_and_delete_leaves_nothing(
    api: httpx.AsyncClient, suite: Suite, collection_name: str
) -> None:
    files = [
        ("files", ("guide.md", b"# Guide\n## Cache\nAnswers are cached per generation.", "text/markdown")),
        (
            "files",
            ("page.html", b"<html><body><main><p>HTML main text.</p></main></body></html>", "text/html"),
        ),
        ("files", ("paper.pdf", _pdf("PDF text about vectors."), "application/pdf")),
        ("files", ("latin.txt", "caf\u00e9 latin-1 text".encode("latin-1"), "text/plain")),
        ("files", ("broken.pdf", b"%PDF-1.4 garbage", "application/pdf")),
        ("files", ("image.png", b"\x89PNG....", "image/png")),
    ]
    accepted = await api.post(f"/v1/collections/{collection_name}/documents", files=files)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["inputs"] == 6
    job = await finished(api, accepted.json()["job_id"])
    assert job["state"] == "completed"
    assert job["counts"]["added"] == 4 and job["counts"]["failed"] == 2
    errors = {e["doc_id"]: e["error"] for e in job["errors"]}
    assert set(errors) == {"broken.pdf", "image.png"}
    assert "unsupported file type .png" in errors["image.png"]
    assert any("latin.txt" in w and "UTF-8" in w for w in job["warnings"])

    listed = (await api.get(f"/v1/collections/{collection_name}/documents")).json()["documents"]
    assert [d["doc_id"] for d in listed] == ["guide.md", "latin.txt", "page.html", "paper.pdf"]

    milvus = connect_milvus(suite.milvus_uri)
    try:
        assert milvus.query(
            collection_name, filter=field_equals("doc_id", "paper.pdf"), output_fields=["text"]
        )
        deleted = await api.delete(f"/v1/collections/{collection_name}/documents/paper.pdf")
        assert deleted.status_code == 200
        rows = milvus.query(
            collection_name,
            filter=field_equals("doc_id", "paper.pdf"),
            output_fields=["chunk_id"],
            consistency_level="Strong",
        )
        assert rows == []
        _assert_error(
            await api.delete(f"/v1/collections/{collection_name}/documents/paper.pdf"),
            404,
            "document_not_found",
        )
        # Same files again: nothing to do; all four are unchanged.
        again = await api.post(f"/v1/collections/{collection_name}/documents", files=files[:4])
        job = await finished(api, again.json()["job_id"])
        assert job["counts"]["unchanged"] == 3 and job["counts"]["added"] == 1  # paper.pdf came back
    finally:
        milvus.drop_collection(collection_name)
        milvus.close()


async def test_json_records_and_updates(api: httpx.AsyncClient, suite: Suite, collection_name: str) -> None:
    records: list[dict[str, Any]] = [
        {"_id": "a", "title": "A", "text": "First record about BM25.", "metadata": {"year": 2020}},
        {"id": "b", "text": "Second record."},
        {"_id": "c"},  # no text: fails alone
    ]
    first = await api.post(f"/v1/collections/{collection_name}/documents", json={"documents": records})
    job = await finished(api, first.json()["job_id"])
    assert (job["counts"]["added"], job["counts"]["failed"]) == (2, 1)
    assert "no text" in job["errors"][0]["error"]

    records[0]["text"] = "First record, now about hybrid search."
    second = await api.post(f"/v1/collections/{collection_name}/documents", json={"documents": records[:2]})
    job = await finished(api, second.json()["job_id"])
    assert (job["counts"]["updated"], job["counts"]["unchanged"]) == (1, 1)
    milvus = connect_milvus(suite.milvus_uri)
    try:
        rows = milvus.query(
            collection_name,
            filter=field_equals("doc_id", "a"),
            output_fields=["text"],
            consistency_level="Strong",
        )
        assert [r["text"] for r in rows] == ["First record, now about hybrid search."]
    finally:
        milvus.drop_collection(collection_name)
        milvus.close()


@pytest.mark.parametrize(
    ("request_kwargs", "status", "code"),
    [
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "invalid_request"),
        ({"json": {"documents": []}}, 422, "invalid_request"),
        ({"json": {"docs": [{"text": "x"}]}}, 422, "invalid_request"),
        ({"content": b"plain", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
        ({"data": {"note": "no files"}, "files": {"other": ("a.txt", b"x")}}, 422, "no_documents"),
    ],
)
async def test_bad_requests_get_the_error_envelope(
    api: httpx.AsyncClient, collection_name: str, request_kwargs: dict[str, Any], status: int, code: str
) -> None:
    response = await api.post(f"/v1/collections/{collection_name}/documents", **request_kwargs)
    _assert_error(response, status, code)


async def test_bad_names_and_unknown_ids(api: httpx.AsyncClient) -> None:
    _assert_error(
        await api.post("/v1/collections/bad-name!/documents", json={"documents": [{"text": "x"}]}),
        422,
        "invalid_collection",
    )
    _assert_error(await api.post("/v1/collections", json={"name": "1bad"}), 422, "invalid_request")
    _assert_error(await api.get("/v1/jobs/job_doesnotexist"), 404, "job_not_found")
    _assert_error(await api.get("/v1/collections/nope_missing/documents"), 404, "collection_not_found")
    _assert_error(await api.get("/v1/collections/nope_missing/documents?limit=0"), 422, "invalid_request")
    body = json.dumps({"name": "x_ok", "chunk_tokens": 32, "chunk_overlap_tokens": 40})
    _assert_error(
        await api.post("/v1/collections", content=body, headers={"content-type": "application/json"}),
        422,
        "invalid_request",
    )


@pytest.mark.parametrize(
    ("doc_id", "reason"),
    [
        ("a\u0000b", "control character (U+0000)"),
        ("line\nbreak", "control character (U+000A)"),
        ("x" * 513, "over the cap of 512"),
        (1.5, "must be a string"),
        ({"nested": "id"}, "must be a string"),
        ("", "id is empty"),
    ],
)
async def test_a_record_id_no_document_may_have_is_a_422(
    api: httpx.AsyncClient, collection_name: str, doc_id: object, reason: str
) -> None:
    records = [{"_id": "good", "text": "A good record."}, {"_id": doc_id, "text": "Some text."}]
    response = await api.post(f"/v1/collections/{collection_name}/documents", json={"documents": records})
    _assert_error(response, 422, "invalid_document_id")
    message = response.json()["error"]["message"]
    assert message.startswith("documents.1:") and reason in message


async def test_a_lone_surrogate_in_an_id_is_a_422(api: httpx.AsyncClient, collection_name: str) -> None:
    body = '{"documents": [{"_id": "a\\ud800b", "text": "Some text."}]}'
    response = await api.post(
        f"/v1/collections/{collection_name}/documents",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] in ("invalid_document_id", "invalid_request")


async def test_job_ids_are_checked_on_the_route(api: httpx.AsyncClient, collection_name: str) -> None:
    accepted = await api.post(
        f"/v1/collections/{collection_name}/documents",
        json={"documents": [{"_id": "a", "text": "Some text to index."}]},
    )
    job_id = accepted.json()["job_id"]
    await finished(api, job_id)
    try:
        # Each names another key of a real job (its results, inputs, warnings): none is a job.
        for suffix in (":results", ":inputs", ":warnings", "%0A", "%00"):
            _assert_error(await api.get(f"/v1/jobs/{job_id}{suffix}"), 404, "job_not_found")
        _assert_error(await api.get("/v1/jobs/job_x:results"), 404, "job_not_found")
        # A document id no document can have is refused before it reaches a Milvus filter
        # (a newline matches no route at all: the router's patterns stop at line ends).
        for bad, status, code in [
            ("a%0Ab", 404, "not_found"),
            ("a%00b", 422, "invalid_document_id"),
            ("a%09b", 422, "invalid_document_id"),
        ]:
            _assert_error(
                await api.delete(f"/v1/collections/{collection_name}/documents/{bad}"), status, code
            )
    finally:
        await api.delete(f"/v1/collections/{collection_name}")


async def test_a_json_records_body_past_its_cap_is_refused_before_parsing(
    api: httpx.AsyncClient, suite: Suite, collection_name: str, make_key: KeyFactory
) -> None:
    """11 MiB of records, over the 10 MiB JSON cap (under the gateway's 50 MiB upload cap):
    413 straight from the ingest API and through the gateway, and no job is queued."""
    text = "word " * 1000
    records = [{"_id": f"d{i}", "text": text} for i in range(11 * 1024 * 1024 // len(text) + 1)]
    body = json.dumps({"documents": records}).encode()
    assert len(body) > 11 * 1024 * 1024
    url = f"/v1/collections/{collection_name}/documents"
    headers = {"content-type": "application/json"}
    key = await make_key({"ingest"})
    for base, extra in (
        (suite.url("ingest"), {}),
        (suite.url("gateway"), {"authorization": f"Bearer {key}"}),
    ):
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            refused = await client.post(url, content=body, headers={**headers, **extra})
        assert refused.status_code == 413, refused.text
        assert refused.json()["error"]["code"] == "payload_too_large"
    jobs = (await api.get("/v1/jobs", params={"collection": collection_name})).json()
    assert jobs["jobs"] == []
