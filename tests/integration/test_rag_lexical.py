"""BM25 through the product path: ingest writes each chunk's normalised title and words into
the ``lexical`` field, rag puts the query through the same steps. A collection made before the
field existed (BM25 over ``text``) keeps taking writes and answering searches. The suite keeps
the terms in a lexical index too: it follows every change, delete and restart, and a
collection it does not hold is searched in Milvus.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingest.config import IngestSettings
from ingest.runner import ingest_path
from services.cli.suite import Suite
from services.common import vector_schema as vs
from services.common.http_client import create_http2_client
from services.common.lexical_index import LexicalIndex
from services.common.milvus_connect import connect_milvus
from services.common.milvus_expr import field_equals

# The kinase record's title holds words its text lacks.
RECORDS = [
    {"_id": "kinase", "title": "Kinase inhibition in tumours", "text": "The compound blocked signalling."},
    {
        "_id": "granite",
        "title": "Granite",
        "text": "Granite forms when magma cools slowly deep below the surface.",
    },
]


@pytest.fixture
def milvus(suite: Suite) -> Iterator[Any]:
    client = connect_milvus(suite.milvus_uri)
    yield client
    client.close()


async def _search(suite: Suite, collection: str, query: str, mode: str) -> list[dict[str, Any]]:
    async with create_http2_client(suite.url("rag")) as client:
        response = await client.post(
            "/v1/search", json={"query": query, "collection": collection, "mode": mode, "top_k": 5}
        )
    assert response.status_code == 200, response.text
    hits: list[dict[str, Any]] = response.json()["hits"]
    return hits


async def _bm25(suite: Suite, collection: str, query: str) -> list[dict[str, Any]]:
    return await _search(suite, collection, query, "bm25")


def _write(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))


async def test_bm25_matches_word_forms_and_titles(
    tmp_path: Path, ingest_settings: IngestSettings, collection_name: str, suite: Suite, milvus: Any
) -> None:
    _write(tmp_path)
    report = await ingest_path(tmp_path, collection_name, ingest_settings)
    assert report.added == 2
    [row] = milvus.query(
        collection_name, filter=field_equals(vs.DOC_ID, "granite"), output_fields=[vs.LEXICAL, vs.TEXT]
    )
    assert "magma cool slowli" in row[vs.LEXICAL] and "the" not in row[vs.LEXICAL].split()
    assert "slowly" in row[vs.TEXT]  # what users read is untouched

    # Other forms of the words ("inhibits", "kinases") find the document that has them.
    hits = await _bm25(suite, collection_name, "inhibits kinases")
    assert [h["doc_id"] for h in hits] == ["kinase"]
    assert (await _bm25(suite, collection_name, "cooling magmas"))[0]["doc_id"] == "granite"
    # Only stop words: no term to score, an empty answer rather than an error.
    assert await _bm25(suite, collection_name, "the of and") == []


async def test_a_collection_made_before_the_lexical_field_still_works(
    tmp_path: Path, ingest_settings: IngestSettings, collection_name: str, suite: Suite, milvus: Any
) -> None:
    milvus.create_collection(
        collection_name,
        schema=vs.build_schema(384, lexical=False),
        index_params=vs.build_index_params(milvus),
    )
    _write(tmp_path)
    report = await ingest_path(tmp_path, collection_name, ingest_settings)
    assert (report.added, report.failed) == (2, 0)
    assert vs.bm25_input(milvus.describe_collection(collection_name)) == vs.TEXT
    hits = await _bm25(suite, collection_name, "magma cools")
    assert hits and hits[0]["doc_id"] == "granite"


def _lexical_searches(suite: Suite) -> dict[str, float]:
    """rag's count of BM25 searches of indexed collections, by what answered them."""
    text = httpx.get(f"{suite.url('rag')}/metrics").text
    found = {"lexical_index": 0.0, "milvus": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "quarry_rag_lexical_searches_total":
                found[sample.labels["engine"]] = sample.value
    return found


async def test_bm25_reads_the_lexical_index_and_follows_every_change(
    tmp_path: Path, ingest_settings: IngestSettings, collection_name: str, suite: Suite, milvus: Any
) -> None:
    _write(tmp_path)
    assert (await ingest_path(tmp_path, collection_name, ingest_settings)).added == 2
    # The collection names its index, so every writer and rag find it whatever their settings.
    assert vs.lexical_index_path(milvus.describe_collection(collection_name)) == str(suite.lexical_index)
    assert LexicalIndex(suite.lexical_index).searchable(collection_name)

    before = _lexical_searches(suite)
    assert [h["doc_id"] for h in await _bm25(suite, collection_name, "magma")] == ["granite"]
    hybrid = await _search(suite, collection_name, "magma cooling", "hybrid")
    assert hybrid[0]["doc_id"] == "granite" and hybrid[0]["bm25"] > 0
    after = _lexical_searches(suite)
    assert after["lexical_index"] == before["lexical_index"] + 2 and after["milvus"] == before["milvus"]

    # A changed document: its old words find nothing, its new ones find it.
    changed = [RECORDS[0], {"_id": "granite", "title": "Granite", "text": "Pink feldspar colours it."}]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in changed))
    assert (await ingest_path(tmp_path, collection_name, ingest_settings)).updated == 1
    assert await _bm25(suite, collection_name, "magma") == []
    assert [h["text"] for h in await _bm25(suite, collection_name, "feldspar")] == [
        "Pink feldspar colours it."
    ]

    # Deleted through the ingest API: gone from BM25 and from hybrid search.
    ingest = f"{suite.url('ingest')}/v1/collections/{collection_name}/documents/granite"
    async with create_http2_client(suite.url("ingest")) as client:
        assert (await client.delete(ingest)).status_code == 200
    assert await _bm25(suite, collection_name, "feldspar granite") == []
    assert all(h["doc_id"] != "granite" for h in await _search(suite, collection_name, "granite", "hybrid"))

    # A rag restarted reads the same file.
    suite.children["rag"].stop()
    suite.restart("rag")
    assert [h["doc_id"] for h in await _bm25(suite, collection_name, "kinase")] == ["kinase"]
    assert _lexical_searches(suite)["lexical_index"] == 1


async def test_a_collection_the_index_lost_is_searched_in_milvus_until_the_next_job(
    tmp_path: Path, ingest_settings: IngestSettings, collection_name: str, suite: Suite
) -> None:
    _write(tmp_path)
    await ingest_path(tmp_path, collection_name, ingest_settings)
    index = LexicalIndex(suite.lexical_index)
    with index.writing(collection_name) as write:
        write.drop()  # as if the file had been replaced by an older copy
    before = _lexical_searches(suite)
    assert [h["doc_id"] for h in await _bm25(suite, collection_name, "magma")] == ["granite"]
    assert _lexical_searches(suite)["milvus"] == before["milvus"] + 1
    # Hybrid ranks chunk ids in both legs; their fields then come from Milvus.
    hybrid = await _search(suite, collection_name, "magma cooling", "hybrid")
    assert hybrid[0]["doc_id"] == "granite" and "magma" in hybrid[0]["text"] and hybrid[0]["bm25"] > 0

    # The next job on the collection copies it from Milvus, though no document changed.
    assert (await ingest_path(tmp_path, collection_name, ingest_settings)).unchanged == 2
    assert index.searchable(collection_name) and index.count(collection_name) == 2
    assert [h["doc_id"] for h in await _bm25(suite, collection_name, "inhibits kinases")] == ["kinase"]
    assert _lexical_searches(suite)["lexical_index"] == before["lexical_index"] + 1
